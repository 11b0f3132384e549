"""Flask extensions, created unbound so that `create_app` can bind them per app."""

from flask_bootstrap import Bootstrap5
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from app.db import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
bootstrap = Bootstrap5()
#: Per-address limits on log-in and the API. Storage comes from RATELIMIT_STORAGE_URI: by
#: default the app's database (app/ratelimit.py), so that every process shares the counts.
limiter = Limiter(key_func=get_remote_address)
