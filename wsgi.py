"""WSGI entry point: `flask` finds `app` here with no variable set; gunicorn serves `wsgi:app`."""
from app import create_app

app = create_app()
