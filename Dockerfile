# One image for every service; docker-compose.yml picks the service by its command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kim ./kim
COPY contracts ./contracts
COPY services ./services
COPY deploy ./deploy
RUN pip install --no-cache-dir .
ENV KIM_DATA_DIR=/data
VOLUME /data
