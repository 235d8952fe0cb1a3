# One image for every role: web (daphne), Celery worker and Celery beat.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INKWAVE_VAR_DIR=/var/lib/inkwave

WORKDIR /app
COPY pyproject.toml README.md ./
COPY inkwave ./inkwave
COPY monitoring ./monitoring
COPY notifications ./notifications
COPY orders ./orders
COPY templates ./templates
COPY manage.py ./
RUN pip install --no-cache-dir . \
    && useradd --system --home /app inkwave \
    && mkdir -p /var/lib/inkwave \
    && SECRET_KEY=build-only python manage.py collectstatic --noinput \
    && chown -R inkwave /var/lib/inkwave

USER inkwave
EXPOSE 8000
CMD ["python", "-m", "inkwave.serve", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", "inkwave.asgi:application"]
