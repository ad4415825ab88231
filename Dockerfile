# badblock in NVIDIA's PyTorch container (NGC). Needs BuildKit (DOCKER_BUILDKIT=1, or buildx).
#   docker build -t badblock .                                  the default NGC tag below
#   docker build --build-arg NGC_TAG=25.05 -t badblock .
#   docker build --build-arg BASE_IMAGE=registry.example.org/nvidia/pytorch:25.10-py3 -t badblock .
# Behind a site mirror, proxy or TLS-inspecting firewall, give pip its settings as BuildKit
# secrets (used by the two install steps only, never stored in the image):
#   docker build --secret id=pipconf,src=$HOME/.config/pip/pip.conf \
#                --secret id=pipcert,src=/etc/ssl/certs/site-ca.pem -t badblock .
# (an HTTP proxy: --build-arg HTTPS_PROXY=http://proxy:3128, which Docker keeps out of the image).
# Run: ./run-docker.sh, or Slurm with pyxis/enroot: see docs/containers.md.
ARG NGC_TAG=25.10
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:${NGC_TAG}-py3
FROM ${BASE_IMAGE}

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    BADBLOCK_DATA=/data \
    BADBLOCK_OUTPUT=/output \
    BADBLOCK_REQUIRE_MOUNTS=1 \
    MPLBACKEND=Agg

# The mount points. /output is writable by anyone for users who set BADBLOCK_REQUIRE_MOUNTS=0;
# otherwise docker/entrypoint.sh refuses to write there unless a volume is mounted on it.
RUN mkdir -p /data /output && chmod 1777 /output

WORKDIR /opt/badblock
# Requirements first, so that this layer is rebuilt only when requirements.txt changes. NGC's
# torch is kept: docker/install-deps.sh pins its version and uses /etc/pip/constraint.txt.
COPY requirements.txt ./
COPY docker/install-deps.sh docker/
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=pipcert \
    bash docker/install-deps.sh --requirements-only /opt/badblock

# Then the package: a code edit re-runs only this layer. pyproject.toml names README.md as the
# package's long description; a one-line stand-in keeps the 90 KB manual (and its every edit)
# out of this layer.
COPY pyproject.toml ./
COPY badblock ./badblock
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=pipcert \
    echo "badblock: see the project's README.md" > README.md \
    && bash docker/install-deps.sh --package-only /opt/badblock \
    && rm -rf /opt/badblock/build /opt/badblock/*.egg-info /opt/badblock/README.md

COPY docker/entrypoint.sh docker/

# Any user may run the image (docker run --user UID:GID, enroot as the caller): nothing it needs
# at run time is owned by root alone, and the entrypoint finds a writable HOME. NVIDIA's
# entrypoint runs first (CUDA forward compatibility on older drivers, shm and driver warnings)
# and execs ours; no CMD, so that BADBLOCK_STAGE alone runs a stage.
WORKDIR /output
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "/opt/badblock/docker/entrypoint.sh"]
