# Weftline for server mode (docker-compose.yml): `weftline api` and `weftline worker`.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY weftline ./weftline
COPY ingest ./ingest
COPY enrich ./enrich
COPY storage ./storage
COPY dashboards ./dashboards
RUN pip install --no-cache-dir . && useradd --system --home /app weftline
USER weftline
EXPOSE 8700
ENTRYPOINT ["weftline"]
CMD ["api", "--host", "0.0.0.0", "--port", "8700"]
