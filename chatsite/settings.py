"""Settings for chatsite: one file, everything from the environment (or `.env`).

See the configuration table in README.md. Nothing secret lives in this file.
"""

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

# Django's generic classes (ModelAdmin, QuerySet, ...) take their model as a type parameter
# at run time too, as django-stubs types them: `class MessageAdmin(ModelAdmin[Message])`.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Tests switch this off so a developer's .env (which may hold a real key) never leaks in.
if env.bool("CHAT_READ_DOTENV", default=True):
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

_DEV_SECRET_KEY = "django-insecure-dev-only-key-never-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=_DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "servestatic",  # its configuration checks
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "chat",
    "django.forms",  # its widget templates, for FORM_RENDERER below
]

# Django's own middleware here runs inline on the event loop under our ASGI handler
# (chat/seams.py says how and why); the names stay Django's.
MIDDLEWARE = [
    "chat.middleware.RequestIdMiddleware",  # first: every response carries X-Request-ID
    # Second: whatever answers below it (a middleware, Django's own 404/500), /api/ errors
    # leave as JSON.
    "chat.middleware.ApiErrorMiddleware",
    # Third: the admin's pages take turns per worker (CHAT_ADMIN_PAGES_AT_ONCE), so staff
    # reloading reports cannot crowd the chat streams out of the worker's GIL.
    "chat.middleware.StaffPageTurnMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files under uvicorn without a proxy in front (`make serve-prod`), from
    # STATIC_ROOT after collectstatic; a proxy may serve /static/ itself instead.
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "chat.middleware.CrossOriginProtectionMiddleware",
    "chat.middleware.AnonymousCookieMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "chat.middleware.SignInRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"

TEMPLATES = [
    {
        # Django's, releasing each page's context once rendered (chat.seams, seam 7).
        "BACKEND": "chat.seams.ReleasingTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chat.access.accounts.entrance_context",
            ],
        },
    },
]

# Forms render through TEMPLATES' backend too, so their contexts are released as a page's
# are (chat.seams, seam 7); Django's default renderer has an engine of its own.
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"

ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = "chatsite.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
if _SQLITE:
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN
    # so two turns never deadlock upgrading a read lock; the busy timeout queues writers
    # (a worker's turn writes come from one thread, see chat/seams.py).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
# A database server's connections are not held across a request: a long stream must not
# pin one. A SQLite file has no server: keeping a thread's connection saves a connect
# per request on the chat's database thread.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=None if _SQLITE else 0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A pool per worker, sized for the threads that use it (chat/seams.py): the chat's
    # request thread, the thread that writes turn starts and finishes, and admin or page
    # requests on threads of their own; more of those at once wait for a free connection.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "pool", {"min_size": 2, "max_size": env.int("DATABASE_POOL_SIZE", default=4)}
    )
    # No JIT: its compile time (a quarter of a second) is spent whenever the planner's
    # estimate is large, as for an admin list with per-row totals that then reads five
    # rows; this service's queries are short, which JIT cannot speed up.
    DATABASES["default"]["OPTIONS"].setdefault("options", "-c jit=off")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            # Redis, or this worker's memory while Redis is down (chat/ops/cache.py).
            "BACKEND": "chat.ops.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            # Deployments sharing one Redis keep apart by prefix (tests use their own).
            "KEY_PREFIX": env.str("CHAT_CACHE_PREFIX", default="chatsite"),
            # An unreachable Redis must fail fast (then degrade), never hang a request.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "chat": {"handlers": ["console"], "level": env.str("CHAT_LOG_LEVEL", default="INFO")},
    },
}

# --- The chat service -------------------------------------------------------------------
# Which upstream: "auto" picks azure / openai / demo from what is configured.
CHAT_PROVIDER = env.str("CHAT_PROVIDER", default="auto")
CHAT_API = env.str("CHAT_API", default="")  # "" = responses for OpenAI, chat otherwise
CHAT_MODEL = env.str("CHAT_MODEL", default="")
CHAT_MODELS = env.list("CHAT_MODELS", default=[])
CHAT_TIMEOUT = env.float("CHAT_TIMEOUT", default=60.0)
# A turn whose model sends nothing for this long (before its first token or mid-reply)
# fails as an upstream timeout, billed for what it was sent; 0 = never.
CHAT_UPSTREAM_IDLE_SECONDS = env.float("CHAT_UPSTREAM_IDLE_SECONDS", default=CHAT_TIMEOUT)
CHAT_MAX_RETRIES = env.int("CHAT_MAX_RETRIES", default=2)
# The SDK's HTTP client: "aiohttp" scales to many concurrent streams; "httpx" is its default.
CHAT_HTTP_CLIENT = env.str("CHAT_HTTP_CLIENT", default="aiohttp")
# Idle upstream connections are dropped after this: shorter than the upstream's own idle
# timeout (uvicorn's is 5 s), or a reused connection may already be closed at the far end.
CHAT_UPSTREAM_KEEPALIVE_SECONDS = env.float("CHAT_UPSTREAM_KEEPALIVE_SECONDS", default=4.0)

# Reasoning models (shell patterns): the Responses API asks them for a summary of their
# reasoning (CHAT_REASONING_SUMMARY: auto, concise, detailed; "" asks for none) and, when
# CHAT_REASONING_EFFORT is set (minimal, low, medium, high), for that effort.
CHAT_REASONING_MODELS = env.list(
    "CHAT_REASONING_MODELS", default=["o1*", "o3*", "o4*", "gpt-5*", "gpt-oss*"]
)
CHAT_REASONING_SUMMARY = env.str("CHAT_REASONING_SUMMARY", default="auto")
CHAT_REASONING_EFFORT = env.str("CHAT_REASONING_EFFORT", default="")
# Tools the model may call: dotted paths of plain functions (chat.tools). Unset: the two
# examples when the offline demo model answers, none otherwise.
CHAT_TOOLS: list[str] | None = env.list("CHAT_TOOLS", default=None)
# OpenAI's hosted web search (Responses API only), priced per 1,000 searches.
CHAT_WEB_SEARCH = env.bool("CHAT_WEB_SEARCH", default=False)
CHAT_WEB_SEARCH_USD_PER_1000 = Decimal(env.str("CHAT_WEB_SEARCH_USD_PER_1000", default="10.00"))
# MCP servers whose tools are offered too (chat/tools/mcp.py): a JSON object of name →
# {"url": streamable HTTP endpoint} or {"command", "args", "env"} (stdio), optionally "tools".
CHAT_MCP_SERVERS: dict[str, dict[str, Any]] = env.json("CHAT_MCP_SERVERS", default={})
CHAT_MCP_TIMEOUT_SECONDS = env.float("CHAT_MCP_TIMEOUT_SECONDS", default=10.0)
CHAT_MCP_CACHE_SECONDS = env.float("CHAT_MCP_CACHE_SECONDS", default=300.0)
CHAT_TOOL_TIMEOUT_SECONDS = env.float("CHAT_TOOL_TIMEOUT_SECONDS", default=20.0)
# Model calls per turn at most: the last one is offered no tools, so it answers in text.
CHAT_TOOL_MAX_ROUNDS = env.int("CHAT_TOOL_MAX_ROUNDS", default=5)
if CHAT_TOOL_MAX_ROUNDS < 1:
    raise ImproperlyConfigured("CHAT_TOOL_MAX_ROUNDS must be 1 or more.")

OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
AZURE_OPENAI_ENDPOINT = env.str("AZURE_OPENAI_ENDPOINT", default="")
AZURE_OPENAI_API_KEY = env.str("AZURE_OPENAI_API_KEY", default="")
AZURE_OPENAI_API_VERSION = env.str("AZURE_OPENAI_API_VERSION", default="2025-04-01-preview")

# Seconds between streamed tokens of the offline demo model.
CHAT_DEMO_DELAY = env.float("CHAT_DEMO_DELAY", default=0.02)

CHAT_ALLOW_ANONYMOUS = env.bool("CHAT_ALLOW_ANONYMOUS", default=DEBUG)

# --- People: sign-in (django-allauth), sign-up, single sign-on, budgets ------------------
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/"
ACCOUNT_ADAPTER = "chat.access.accounts.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "chat.access.accounts.SocialAccountAdapter"
# Self sign-up is off unless asked for; staff create people in the admin, SSO on first use.
CHAT_SIGNUP = env.bool("CHAT_SIGNUP", default=False)
# Email domains self sign-up (and a first SSO sign-in) is open to; empty: any.
CHAT_SIGNUP_DOMAINS = [d.lower().lstrip("@") for d in env.list("CHAT_SIGNUP_DOMAINS", default=[])]
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
# Open sign-up must prove the address (else CHAT_SIGNUP_DOMAINS proves nothing); people
# made by staff, or by SSO, are vouched for already.
ACCOUNT_EMAIL_VERIFICATION = env.str(
    "CHAT_EMAIL_VERIFICATION", default="mandatory" if CHAT_SIGNUP else "none"
)
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_SESSION_REMEMBER = True
ACCOUNT_LOGIN_ON_PASSWORD_RESET = True
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if DEBUG else "https"
SOCIALACCOUNT_EMAIL_VERIFICATION = "none"  # the identity provider vouches for the address
# An SSO identity whose verified email is an existing person's signs in as that person.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_STORE_TOKENS = False
# Single sign-on through OpenID Connect: an issuer URL, a client id and a secret (README
# "People and sign-in" has examples for Entra ID, Google, Okta and Keycloak).
CHAT_OIDC_ISSUER = env.str("CHAT_OIDC_ISSUER", default="")
# The claim (in the ID token or userinfo) that lists a person's groups, e.g. `groups`: at
# each single sign-on their Django groups (and so group budgets) follow it. Empty: off.
CHAT_OIDC_GROUPS_CLAIM = env.str("CHAT_OIDC_GROUPS_CLAIM", default="")
SOCIALACCOUNT_PROVIDERS: dict[str, object] = {}
if CHAT_OIDC_ISSUER:
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "OAUTH_PKCE_ENABLED": True,
        "APPS": [
            {
                "provider_id": "sso",
                "name": env.str("CHAT_OIDC_NAME", default="Single sign-on"),
                "client_id": env.str("CHAT_OIDC_CLIENT_ID"),
                "secret": env.str("CHAT_OIDC_CLIENT_SECRET", default=""),
                "settings": {
                    "server_url": CHAT_OIDC_ISSUER,
                    "scope": env.list("CHAT_OIDC_SCOPES", default=["openid", "profile", "email"]),
                },
            }
        ],
    }
# Password reset and verification mail: printed to the console in DEBUG, else SMTP from
# EMAIL_URL (smtp+tls://user:password@host:587).
vars().update(
    env.email_url("EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25")
)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="chat@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Each person's spending limit per period (day, week or month in TIME_ZONE); unset = off.
# An admin can give a person their own limit, or none (chat/spend/budgets.py).
_budget_text = env.str("CHAT_BUDGET_USD", default="").strip()
try:
    CHAT_BUDGET_USD = Decimal(_budget_text) if _budget_text else None
except InvalidOperation:
    raise ImproperlyConfigured("CHAT_BUDGET_USD must be an amount such as 5 or 12.50.") from None
if CHAT_BUDGET_USD is not None and (not CHAT_BUDGET_USD.is_finite() or CHAT_BUDGET_USD < 0):
    raise ImproperlyConfigured("CHAT_BUDGET_USD must be 0 or more.")
CHAT_BUDGET_PERIOD = env.str("CHAT_BUDGET_PERIOD", default="month")
if CHAT_BUDGET_PERIOD not in ("day", "week", "month"):
    raise ImproperlyConfigured("CHAT_BUDGET_PERIOD must be day, week or month.")
# The page warns once a person's (or their group's) spend reaches this share of the limit.
CHAT_BUDGET_WARN_PERCENT = env.int("CHAT_BUDGET_WARN_PERCENT", default=80)
if not 1 <= CHAT_BUDGET_WARN_PERCENT <= 100:
    raise ImproperlyConfigured("CHAT_BUDGET_WARN_PERCENT must be a whole number from 1 to 100.")
# Message text and titles older than this many days are removed by `chat_purge
# --retention` (usage and cost stay); unset: kept forever.
_retention = env.str("CHAT_RETENTION_DAYS", default="").strip()
try:
    CHAT_RETENTION_DAYS = int(_retention) if _retention else None
except ValueError:
    raise ImproperlyConfigured("CHAT_RETENTION_DAYS must be a number of days.") from None
if CHAT_RETENTION_DAYS is not None and CHAT_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("CHAT_RETENTION_DAYS must be 1 or more (unset keeps everything).")
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=32_000)
CHAT_MAX_SYSTEM_CHARS = env.int("CHAT_MAX_SYSTEM_CHARS", default=8_000)
CHAT_MAX_CONTEXT_MESSAGES = env.int("CHAT_MAX_CONTEXT_MESSAGES", default=40)
if CHAT_MAX_CONTEXT_MESSAGES < 0:
    raise ImproperlyConfigured("CHAT_MAX_CONTEXT_MESSAGES must be 0 or more.")
# How long a second reader of a turn that is still streaming waits for its stored result.
CHAT_STREAM_WAIT_SECONDS = env.float("CHAT_STREAM_WAIT_SECONDS", default=120.0)
# A detached turn nobody has been reading for this long is stopped (0: when the last
# reader leaves); its event log is kept this long after it ends, for resuming readers.
CHAT_RESUME_GRACE_SECONDS = env.float("CHAT_RESUME_GRACE_SECONDS", default=60.0)
CHAT_RESUME_TTL_SECONDS = env.int("CHAT_RESUME_TTL_SECONDS", default=600)
CHAT_SSE_PING_SECONDS = env.float("CHAT_SSE_PING_SECONDS", default=15.0)
# A reply's text goes out at most one frame per this many milliseconds (its first token at
# once; a tool call or the end at once, after the text before it); 0 = a frame per token.
# Each frame is a socket write per reader and a log entry per turn, so a model's token
# every few milliseconds costs a frame per interval. 40 ms, 25 frames a second, is about
# the rate of film, where text still reads as flowing rather than arriving in jumps.
CHAT_STREAM_FRAME_MS = env.float("CHAT_STREAM_FRAME_MS", default=40.0)
if CHAT_STREAM_FRAME_MS < 0:
    raise ImproperlyConfigured("CHAT_STREAM_FRAME_MS must be 0 or more.")
# Request bodies above this are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("CHAT_MAX_BODY_BYTES", default=256 * 1024)
# Limits per user (or per client IP when anonymous), shared by workers through the cache
# (see README "Security and limits"). New turns per window: "20/min", "300/hour"; "" = off.
CHAT_RATE_LIMIT = env.str("CHAT_RATE_LIMIT", default="20/min")
# Tokens (input + output, as recorded) per owner per day in TIME_ZONE; 0 = no quota.
CHAT_DAILY_TOKEN_QUOTA = env.int("CHAT_DAILY_TOKEN_QUOTA", default=0)
# Replies being written at once per owner; 0 = no cap.
CHAT_MAX_CONCURRENT_STREAMS = env.int("CHAT_MAX_CONCURRENT_STREAMS", default=3)
# Admin pages rendered at once per worker; the others wait (0: no limit). See
# chat.ops.gates: each page rendering at once takes a share of the worker's GIL from the
# chat streams.
CHAT_ADMIN_PAGES_AT_ONCE = env.int("CHAT_ADMIN_PAGES_AT_ONCE", default=1)
# How long a worker's thread may hold the GIL while another waits (sys.setswitchinterval),
# set by chatsite.asgi for serving only: the event loop waits up to this long for a page
# rendering on a thread each time it wakes.
CHAT_SWITCH_INTERVAL_MS = env.float("CHAT_SWITCH_INTERVAL_MS", default=1.0)
# Behind a reverse proxy: the header it appends the client address to (X-Forwarded-For).
CHAT_CLIENT_IP_HEADER = env.str("CHAT_CLIENT_IP_HEADER", default="")
# `pending`/`streaming` rows older than this are stale (their worker died): marked
# `incomplete` by each worker at start-up and every CHAT_STALE_SWEEP_SECONDS, and by
# `manage.py chat_expire_stale`.
CHAT_STALE_TURN_SECONDS = env.int("CHAT_STALE_TURN_SECONDS", default=3600)
# How often each worker sweeps for such turns while it runs (0 = only at start-up).
CHAT_STALE_SWEEP_SECONDS = env.float("CHAT_STALE_SWEEP_SECONDS", default=300.0)
# A worker producing a turn holds a lease on it, renewed every third of this while it
# streams (in Redis with REDIS_URL, else on the row, with the text so far); a turn whose
# lease lapsed is finished by any worker as `incomplete` (error `interrupted`), its usage
# estimated. The stale sweep above is the safety net behind it.
CHAT_LEASE_SECONDS = env.float("CHAT_LEASE_SECONDS", default=6.0)
if CHAT_LEASE_SECONDS <= 0:
    raise ImproperlyConfigured("CHAT_LEASE_SECONDS must be more than 0.")
# At shutdown (SIGTERM), how long the turns still running may take to finish before they
# are recorded as interrupted.
CHAT_SHUTDOWN_SECONDS = env.float("CHAT_SHUTDOWN_SECONDS", default=20.0)

# --- Attachments (chat/files/; README "Attachments") --------------------------------------
# Bytes stored per file (after re-encoding an image), files per message, and bytes a
# person may upload per day in TIME_ZONE; above each: 413. Images above this many pixels
# are refused before they are decoded (decompression bombs included).
CHAT_FILES_MAX_BYTES = env.int("CHAT_FILES_MAX_BYTES", default=20 * 1024 * 1024)
CHAT_FILES_PER_MESSAGE = env.int("CHAT_FILES_PER_MESSAGE", default=10)
CHAT_FILES_DAILY_BYTES = env.int("CHAT_FILES_DAILY_BYTES", default=200 * 1024 * 1024)
CHAT_FILES_MAX_PIXELS = env.int("CHAT_FILES_MAX_PIXELS", default=25_000_000)
# A text file goes to the model inline, cut after this many characters (with a note).
CHAT_FILES_MAX_TEXT_CHARS = env.int("CHAT_FILES_MAX_TEXT_CHARS", default=200_000)
# Each worker keeps the newest files encoded for the model (base64), up to this many
# characters: a conversation sends its earlier images again on every turn.
CHAT_FILES_CACHE_BYTES = env.int("CHAT_FILES_CACHE_BYTES", default=64 * 1024 * 1024)
# Models that take images and PDFs (a dated snapshot, `gpt-4.1-2025-04-14`, counts as its
# base name); the offline demo model always does. Others get 400 for an image.
CHAT_VISION_MODELS = env.list(
    "CHAT_VISION_MODELS",
    default=[
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "o3",
        "o4-mini",
    ],
)
# Local files under MEDIA_ROOT/attachments by default; S3-compatible object storage when
# a bucket is named (credentials as boto3 reads them: AWS_ACCESS_KEY_ID, … or a role).
# Private either way: the bytes are only ever served through GET /api/files/<id>.
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")
CHAT_FILES_S3_BUCKET = env.str("CHAT_FILES_S3_BUCKET", default="")
_ATTACHMENTS_STORAGE: dict[str, Any] = {
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {"location": str(MEDIA_ROOT("attachments")), "base_url": None},
}
if CHAT_FILES_S3_BUCKET:
    _ATTACHMENTS_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": CHAT_FILES_S3_BUCKET,
            "endpoint_url": env.str("CHAT_FILES_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("CHAT_FILES_S3_REGION", default="") or None,
            "location": "attachments",
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
STORAGES: dict[str, Any] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Production serves what collectstatic wrote (`make serve-prod` runs it first): hashed
    # names, cached for a year. DEBUG serves the source files as they are edited.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "chatsite.staticfiles.HashedStaticFilesStorage"
    },
    "attachments": _ATTACHMENTS_STORAGE,
}

# --- Production hardening (see README "Security and limits") -----------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    # Preloading is a hard-to-undo commitment for the whole domain, the operator's call
    # (SECURE_HSTS_PRELOAD=true), so `check --deploy` need not nag about it.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
    if env.bool("BEHIND_TLS_PROXY", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Operations (see README "Deployment") ------------------------------------------------
# /metrics: this Bearer token, or when empty only direct requests from 127.0.0.1 / ::1.
CHAT_METRICS_TOKEN = env.str("CHAT_METRICS_TOKEN", default="")
# "json": one JSON object per log line (chat.ops.logs), for a log store to search.
CHAT_LOG_FORMAT = env.str("CHAT_LOG_FORMAT", default="text")
if CHAT_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured("CHAT_LOG_FORMAT must be 'text' or 'json'.")
if CHAT_LOG_FORMAT == "json":
    LOGGING["formatters"]["json"] = {"()": "chat.ops.logs.JsonFormatter"}
    LOGGING["handlers"]["console"]["formatter"] = "json"
    # Django's own errors (a 500's traceback) and the uvicorn worker's lines in the same
    # stream, as JSON too (the uvicorn parent's: `--log-config deploy/uvicorn-log.json`).
    LOGGING["loggers"]["django"] = {"handlers": ["console"], "level": "ERROR"}
    LOGGING["loggers"]["uvicorn"] = {"handlers": ["console"], "level": "INFO", "propagate": False}
# Probes and scrapers talk plain HTTP to a worker on this machine: no HTTPS redirect.
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
