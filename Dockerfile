FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin entitlement-sync
# Nothing after the install needs root: the service runs as an unprivileged user, by number so that
# Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# 8000: public (Stripe's webhooks, /healthz). 8001: internal (read API, /metrics, /readyz): never publish it.
EXPOSE 8000 8001
CMD ["entitlement-sync", "serve", "--port", "8000", "--internal-port", "8001"]
