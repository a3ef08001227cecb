"""`python -m biofuse`: the same command as `biofuse`."""

from biofuse.cli import app

if __name__ == "__main__":
    app(prog_name="biofuse")
