"""``python -m securedc`` (also what ``torchrun -m securedc`` runs)."""

from securedc.cli import main

if __name__ == "__main__":
    main()
