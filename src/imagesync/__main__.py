from imagesync.cli import app

app()
