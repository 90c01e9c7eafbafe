"""PLINK 2-style phenotype and covariate tables.

Accepted layouts (whitespace- or tab-separated, as PLINK 2 reads them):

* a header line ``#FID IID NAME...`` or ``FID IID NAME...``: samples matched on (FID, IID);
* a header line ``#IID NAME...`` or ``IID NAME...``: samples matched on IID only;
* no header: ``FID IID value...`` with columns named ``PHENO1``, ``PHENO2``... as PLINK does.

``NA``, ``nan`` and ``-9`` (PLINK's default missing phenotype) are missing. A non-numeric value in a
requested column is an error that names the file, line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import InputError

MISSING_TOKENS = frozenset({"NA", "na", "NaN", "nan", "-9", "."})


@dataclass(frozen=True)
class SampleTable:
    """A parsed phenotype/covariate file: identifiers and raw text columns, shapes ``(n_rows,)``."""

    path: Path
    fid: np.ndarray | None  # str, None when the file is keyed by IID only
    iid: np.ndarray  # str
    columns: dict[str, np.ndarray]  # name -> str values as written

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def numeric(self, name: str) -> np.ndarray:
        """Column ``name`` as float64 with NaN for missing tokens.

        Raises
        ------
        InputError
            If the column does not exist or holds a non-numeric, non-missing value.
        """
        if name not in self.columns:
            raise InputError(
                f"column {name!r} not found in {str(self.path)!r}; available: {', '.join(self.names) or 'none'}"
            )
        text = self.columns[name]
        missing = np.isin(text, list(MISSING_TOKENS))
        values = np.full(len(text), np.nan)
        try:
            values[~missing] = text[~missing].astype(np.float64)
        except ValueError:
            for row, token in enumerate(text):
                if token in MISSING_TOKENS:
                    continue
                try:
                    float(token)
                except ValueError:
                    raise InputError(
                        f"{str(self.path)!r} data row {row + 1}, column {name!r}: {token!r} is not a number "
                        "(categorical covariates are not supported; missing values are NA or -9)"
                    ) from None
            raise
        if not np.all(np.isfinite(values[~missing])):
            row = int(np.flatnonzero(~missing & ~np.isfinite(values))[0])
            raise InputError(f"{str(self.path)!r} data row {row + 1}, column {name!r}: {text[row]!r} is not finite")
        return values

    def keep_rows(self, mask: np.ndarray) -> "SampleTable":
        """The rows where ``mask`` is True (used to hand each site only its own samples)."""
        return SampleTable(
            path=self.path,
            fid=None if self.fid is None else self.fid[mask],
            iid=self.iid[mask],
            columns={k: v[mask] for k, v in self.columns.items()},
        )

    def write(self, path: Path) -> None:
        """Write in PLINK 2 layout with a ``#FID IID`` or ``#IID`` header."""
        id_names = ["IID"] if self.fid is None else ["FID", "IID"]
        header = "#" + "\t".join(id_names + self.names)
        id_cols = [self.iid] if self.fid is None else [self.fid, self.iid]
        rows = zip(*id_cols, *self.columns.values())
        body = "".join("\t".join(row) + "\n" for row in rows)
        path.write_text(header + "\n" + body, encoding="utf-8")


def read_sample_table(path: Path | str) -> SampleTable:
    """Parse a phenotype or covariate file (layouts in the module docstring)."""
    path = Path(path)
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise InputError(f"phenotype/covariate file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc}") from exc
    if not lines:
        raise InputError(f"{str(path)!r} is empty")
    first = [lines[0][0].lstrip("#")] + lines[0][1:]
    if first[0] == "FID" and len(first) >= 2 and first[1] == "IID":
        n_ids, names, data = 2, first[2:], lines[1:]
    elif first[0] == "IID":
        n_ids, names, data = 1, first[1:], lines[1:]
    elif lines[0][0].startswith("#"):
        raise InputError(f"{str(path)!r}: header must start with '#FID IID' or '#IID', found {lines[0][0]!r}")
    else:
        n_ids, names, data = 2, [f"PHENO{i}" for i in range(1, len(lines[0]) - 1)], lines
    if not names:
        raise InputError(f"{str(path)!r} has identifier columns but no data columns")
    if len(set(names)) != len(names):
        raise InputError(f"{str(path)!r} has duplicate column names: {names}")
    width = n_ids + len(names)
    for number, row in enumerate(data, start=2 if data is not lines else 1):
        if len(row) != width:
            raise InputError(f"{str(path)!r} line {number}: expected {width} columns, found {len(row)}")
    matrix = np.array(data, dtype=str).reshape(len(data), width)
    fid = matrix[:, 0] if n_ids == 2 else None
    iid = matrix[:, n_ids - 1]
    keys = iid if fid is None else np.char.add(np.char.add(fid, "\x00"), iid)
    if len(np.unique(keys)) != len(keys):
        raise InputError(f"{str(path)!r} lists a sample more than once")
    columns = {name: matrix[:, n_ids + i] for i, name in enumerate(names)}
    return SampleTable(path=path, fid=fid, iid=iid, columns=columns)


_RANGE = re.compile(r"^(?P<stem>.*?)(?P<start>\d+)-(?P=stem)(?P<end>\d+)$")


def expand_names(spec: str | Sequence[str]) -> list[str]:
    """Expand PLINK-style name lists: ``"SEX,AGE,PC1-PC4"`` -> SEX, AGE, PC1, PC2, PC3, PC4."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        match = _RANGE.match(item)
        if match:
            start, end = int(match["start"]), int(match["end"])
            if end < start:
                raise InputError(f"covariate range {item!r} runs backwards")
            names.extend(f"{match['stem']}{k}" for k in range(start, end + 1))
        else:
            names.append(item)
    if len(set(names)) != len(names):
        raise InputError(f"name list {spec!r} repeats a name")
    return names
