from shoppers.cli import app

app(prog_name="python -m shoppers")
