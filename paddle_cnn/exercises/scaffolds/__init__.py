"""One module per exercise: the scaffold a notebook cell holds, importable and linted (see catalogue.Exercise.scaffold)."""
