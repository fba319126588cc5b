"""Write a copy of an ImageFolder with every image's short side resized to SIZE (bicubic, JPEG quality 90).

The experiment's models see 64-96 px; decoding the 224 px originals every epoch costs more CPU than the models do.
python shrink.py SRC DST SIZE
"""

import sys
from pathlib import Path

from PIL import Image

src, dst, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
n = 0
for path in sorted(src.rglob("*")):
    if not path.is_file() or path.suffix.lower() not in (".jpeg", ".jpg", ".png"):
        continue
    out = dst / path.relative_to(src)
    if out.exists():
        continue
    out.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        img = img.convert("RGB")
        w, h = img.size
        s = size / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
        img.save(out, quality=90)
    n += 1
print(f"{n} images written under {dst}")
