# syntax=docker/dockerfile:1
# txpipe: fan one HTTP upload out to N receivers.
#
#   docker build -t txpipe .
#   docker run --rm -p 8080:8080 txpipe
#   docker run ... txpipe --secret-file /run/secrets/txpipe --max-ttl 3600
#
# Every argument after the image goes to `twistd pipe` (docs/install.md).
# Give `docker stop`/`docker run` a stop timeout of 75 s (--stop-timeout 75):
# SIGTERM drains running transfers for --drain-timeout (60 s) before the
# process exits, and Docker's default is 10 s (docs/install.md, In a container).
#
# BASE: any Debian-based image with python3 and its venv module (the
# official python:*-slim images, or debian with python3-venv). The build
# and the final stage use the same one, so the venv's interpreter is there.
ARG BASE=python:3.12-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# pip's own settings (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX, ...) may
# come in as build arguments, for a mirror or an offline build.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
COPY . /src
# Wheels first (txpipe's and every dependency's), then a venv of those
# wheels alone (pip compiles them: a read-only root cannot cache bytecode).
# pip and setuptools leave the venv, and so do Twisted's own test suites (a
# third of its size): the server needs none of them.
RUN python3 -m venv /opt/txpipe \
 && /opt/txpipe/bin/pip wheel --wheel-dir /wheels /src \
 && /opt/txpipe/bin/pip install --no-index --find-links /wheels txpipe \
 && /opt/txpipe/bin/pip uninstall --yes pip setuptools wheel \
 && find /opt/txpipe/lib -path '*/site-packages/twisted/*' -type d -name test \
        -prune -exec rm -rf {} + \
 && /opt/txpipe/bin/twistd --help | grep -q '^ *pipe '

FROM ${BASE}
# Keep in step with pipe/__version__ (tests/test_container_entry.py).
ARG VERSION=0.1.0
# Where the source is: a release build passes its repository's URL.
ARG SOURCE=https://pypi.org/project/txpipe/
LABEL org.opencontainers.image.title="txpipe" \
      org.opencontainers.image.description="Fan one HTTP upload out to N receivers (streaming Twisted server)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/txpipe /opt/txpipe
# A fixed numeric user and group, no home, no shell. twistd's plugin cache
# is written now: at run time the root filesystem may be read-only.
RUN groupadd --gid 10001 txpipe \
 && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin --no-log-init txpipe \
 && /opt/txpipe/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && test -f /opt/txpipe/lib/python3*/site-packages/twisted/plugins/dropin.cache
ENV PATH=/opt/txpipe/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
# /healthz over loopback with the standard library (no curl here). With
# another --listen, set TXPIPE_HEALTHCHECK_URL.
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s --retries=3 \
    CMD ["/opt/txpipe/bin/python", "-m", "pipe._deploy.healthcheck"]
# twistd --nodaemon --pidfile= pipe ARGS, logging to stdout; exits 0 after a
# SIGTERM whose drain let every transfer finish (pipe/_deploy/container.py).
ENTRYPOINT ["/opt/txpipe/bin/python", "-m", "pipe._deploy.container"]
CMD ["--listen", "tcp:8080"]
