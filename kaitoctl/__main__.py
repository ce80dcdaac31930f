"""``python -m kaitoctl`` runs the CLI."""

from kaitoctl.cli import main

if __name__ == "__main__":
    main()
