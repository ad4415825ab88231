# badblock in NVIDIA's PyTorch container (NGC). Build:
#   docker build -t badblock .                          (default NGC tag below)
#   docker build --build-arg NGC_TAG=25.05 -t badblock .
# Run: ./run-docker.sh (see docs/readme/cluster.md); pyxis: enroot import dockerd://badblock
ARG NGC_TAG=25.10
FROM nvcr.io/nvidia/pytorch:${NGC_TAG}-py3

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    BADBLOCK_DATA=/data \
    BADBLOCK_OUTPUT=/output \
    MPLBACKEND=Agg

WORKDIR /opt/badblock
# Requirements first, so that this layer is rebuilt only when requirements.txt changes. NGC's
# torch is kept: docker/install-deps.sh pins its version and uses /etc/pip/constraint.txt.
COPY requirements.txt ./
COPY docker/install-deps.sh docker/
RUN bash docker/install-deps.sh --requirements-only /opt/badblock

COPY pyproject.toml README.md ./
COPY badblock ./badblock
COPY docker/entrypoint.sh docker/
RUN bash docker/install-deps.sh --package-only /opt/badblock \
    && rm -rf /opt/badblock/build /opt/badblock/*.egg-info \
    && mkdir -p /data /output \
    && chmod 1777 /output

# Any user may run the image (docker run --user UID:GID, enroot as the caller): nothing it needs
# at run time is owned by root alone, and the entrypoint finds a writable HOME.
WORKDIR /output
ENTRYPOINT ["/opt/badblock/docker/entrypoint.sh"]
CMD ["--help"]
