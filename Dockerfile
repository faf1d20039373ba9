# syntax=docker/dockerfile:1
# Campfire images. Not built in the project's CI (its machines have no Docker engine): the file is
# kept plain and conventional.
#
#   docker build --target bot -t campfire:bot .              # Discord bot, console, import, digest (CPU torch)
#   docker build --target generator -t campfire:generator .  # OpenAI-compatible generator (CUDA torch)
#
# Both run as the non-root user `campfire` and keep everything they write in the /data volume
# (CAMPFIRE_DATA_DIR): campfire.db, indexes/, models/. Secrets (DISCORD_TOKEN,
# CAMPFIRE_GENERATOR_API_KEY) come from the environment at run time, never from the image.
ARG PYTHON_VERSION=3.11

# ---- base: Python, the user, the data volume -----------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    CAMPFIRE_DATA_DIR=/data \
    PATH=/opt/venv/bin:$PATH
RUN useradd --create-home --uid 10001 campfire \
    && mkdir /data && chown campfire:campfire /data
WORKDIR /app

# ---- build stages: a virtualenv each, from the same locks as `make install` --------------------------
# requirements/*.txt pin every package to the version (and file hashes) that passed `make test`;
# --no-deps + --require-hashes install exactly those, nothing resolved on the day of the build. The
# locks are for CPython 3.11 on x86_64 Linux (keep PYTHON_VERSION=3.11; regenerate with `make lock`).
FROM base AS build-cpu
# torch 2.13.0+cpu (the CPU build) is not on PyPI: pip takes it from PyTorch's CPU index; the hash in
# requirements/cpu.txt still decides which file is accepted
ARG TORCH_CPU_LINKS=https://download.pytorch.org/whl/cpu/torch/
COPY requirements ./requirements
RUN python -m venv /opt/venv \
    && pip install --no-deps --require-hashes --find-links "${TORCH_CPU_LINKS}" \
        -r requirements/cpu.txt -r requirements/nodeps.txt
COPY pyproject.toml README.md ./
COPY campfire ./campfire
COPY bot ./bot
COPY model ./model
COPY recsys ./recsys
RUN pip install --no-deps --no-build-isolation . \
    && python requirements/lockdiff.py check requirements/cpu.txt requirements/nodeps.txt
# the CPU engine: llama.cpp's llama-server from the sdist pinned in requirements/llama-server.txt
# (model/build_llama.py, ≈ 6–10 min on 2 cores), with llama-quantize. Portable (AVX2): an image runs on
# other machines than the one that built it. If it cannot build, the step says why in one line and the
# image serves with the transformers engine (generator.engine = auto).
ENV CAMPFIRE_LLAMA_CACHE=/opt/llama
RUN apt-get update && apt-get install -y --no-install-recommends cmake g++ make \
    && mkdir -p /opt/llama && python -m model.build_llama --portable --jobs "$(nproc)" \
    && rm -rf /var/lib/apt/lists/* /opt/llama/*/campfire-llama-*

FROM base AS build-cuda
# requirements/cuda.txt: PyPI's torch 2.13.0, the CUDA 13 build, with its nvidia-* wheels (they bundle
# the CUDA libraries; the host needs an NVIDIA driver for CUDA 13 + the NVIDIA Container Toolkit);
# every other package at the same version as in cpu.txt
COPY requirements ./requirements
RUN python -m venv /opt/venv \
    && pip install --no-deps --require-hashes -r requirements/cuda.txt -r requirements/nodeps.txt
COPY pyproject.toml README.md ./
COPY campfire ./campfire
COPY bot ./bot
COPY model ./model
COPY recsys ./recsys
RUN pip install --no-deps --no-build-isolation . \
    && python requirements/lockdiff.py check requirements/cuda.txt requirements/nodeps.txt

# ---- bot: `campfire bot` (default), or any subcommand: console, import, digest, … ----------------
FROM base AS bot
COPY --from=build-cpu /opt/venv /opt/venv
# llama-server (see build-cpu) needs the GNU OpenMP runtime
COPY --from=build-cpu /opt/llama /opt/llama
ENV CAMPFIRE_LLAMA_CACHE=/opt/llama
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY config.toml ./
COPY examples ./examples
USER campfire
VOLUME ["/data"]
# without CAMPFIRE_GENERATOR__URL the bot runs the embedded generator: prepare its model first
# (a no-op once /data/models holds it)
ENTRYPOINT ["sh", "-c", "if [ \"$1\" = bot ] && [ -z \"$CAMPFIRE_GENERATOR__URL\" ]; then campfire model prepare --no-smoke || exit 1; fi; exec campfire \"$@\"", "campfire"]
CMD ["bot"]

# ---- generator: `campfire serve` on a GPU -----------------------------------------------------------
FROM base AS generator
COPY --from=build-cuda /opt/venv /opt/venv
COPY config.toml ./
USER campfire
VOLUME ["/data"]
ENV CAMPFIRE_GENERATOR__DEVICE=cuda
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
# prepare the packaged model into /data/models once (a no-op afterwards), then serve on all interfaces
ENTRYPOINT ["sh", "-c", "campfire model prepare --no-smoke || exit 1; exec campfire serve --host 0.0.0.0 --port 8000 \"$@\"", "campfire-serve"]
