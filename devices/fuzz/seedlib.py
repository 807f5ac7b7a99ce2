"""Shared by the gen_seeds_*.py scripts: writing a target's seeds."""
import os


def write(target, seeds):
    """Writes each seed of `seeds` (name -> bytes) into corpus/<target>/."""
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", target)
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out}")
