"""WSGI entry for production servers; the bundle comes from $MLTC_BUNDLE (default models/books/bundle).

    MLTC_BUNDLE=models/books/bundle gunicorn -w 2 --threads 4 -b 127.0.0.1:8000 flask_app.wsgi:app
    # equivalently: gunicorn ... 'flask_app:create_app()'
"""
from flask_app import create_app

app = create_app()
