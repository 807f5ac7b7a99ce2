# The smallest Django project: one view, no database.
SECRET_KEY = "dev-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "webapp.urls"
INSTALLED_APPS = []
DATABASES = {}
USE_TZ = True
