FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY relay ./relay
RUN pip install . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin relay
COPY config/relay.yaml /etc/tasknation-relay/relay.yaml

USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["relay"]
CMD ["serve", "--config", "/etc/tasknation-relay/relay.yaml"]
