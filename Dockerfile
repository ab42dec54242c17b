# One image for the three sides of the lab and its board (compose.yaml): the
# project in a venv, plus iproute2 so `ss` and `ip` work inside the containers.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/tcplab
COPY pyproject.toml README.md ./
COPY core ./core
COPY tcplab ./tcplab
COPY daemons ./daemons
COPY proxy ./proxy
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir . \
    && rm -rf /root/.cache

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TCPLAB_PROXY_SOCKET=/run/tcplab/proxy.sock
ENTRYPOINT ["tcplab"]
CMD ["list"]
