"""``python -m securedc`` (also what ``torchrun -m securedc`` runs)."""

from securedc.cli import app

if __name__ == "__main__":
    app()
