"""``--pseudonymize``: keyed hashes for identifiers and paths, dates shifted per patient.

* Identifiers (Study/Series/SOP Instance UID, AccessionNumber, PatientID) and paths
  become ``HMAC-SHA256(key, kind + ":" + value)``, 24 hex digits: the same value gives
  the same pseudonym in every table and every run with the same key, so tables still
  join; without the key it cannot be reversed or checked against a guess.
* Dates (StudyDate) move back by a whole number of days, 1 to 1825, drawn from the
  keyed hash of the PatientID: intervals between one patient's studies are kept, the
  calendar is not.  Age and sex are kept (the subgroups need them).
* The key comes from ``--pseudonym-key-file`` (or ``[batch] pseudonym_key_file``), else
  the environment variable ``CHEXDCM_PSEUDONYM_KEY``; at least 16 bytes.  Without one
  the run refuses to start.  Keep it: without it, a later run cannot link its tables to
  these.  The ledger records a key id (a hash of the key), so a resume with another key
  is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

from chexnet_dicom.batch.schema import Column
from chexnet_dicom.errors import ConfigError

__all__ = ["KEY_ENV", "MAX_SHIFT_DAYS", "Pseudonymizer"]

KEY_ENV = "CHEXDCM_PSEUDONYM_KEY"
#: Dates move back by 1 to this many days.
MAX_SHIFT_DAYS = 1825


class Pseudonymizer:
    """Keyed pseudonyms and per-patient date shifts (see the module docstring).

    Parameters
    ----------
    key
        At least 16 bytes.
    """

    def __init__(self, key: bytes) -> None:
        key = key.strip()
        if len(key) < 16:
            raise ConfigError(
                "the pseudonymisation key must hold at least 16 bytes (for example 32 hex digits)"
            )
        self._key = key

    @classmethod
    def load(cls, key_file: str | os.PathLike[str] | None = None) -> Pseudonymizer:
        """The key from ``key_file``, else from ``CHEXDCM_PSEUDONYM_KEY``.

        Raises
        ------
        ConfigError
            When neither gives a key (the run must not start).
        """
        if key_file:
            try:
                return cls(Path(key_file).read_bytes())
            except OSError as exc:
                raise ConfigError(f"cannot read the pseudonymisation key file ({exc.strerror})") from None
        value = os.environ.get(KEY_ENV, "")
        if not value:
            raise ConfigError(
                f"--pseudonymize needs a key: give --pseudonym-key-file FILE or set {KEY_ENV} "
                "(at least 16 bytes; keep it to link later runs)"
            )
        return cls(value.encode())

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()

    @property
    def key_id(self) -> str:
        """A hash of the key that identifies it without revealing it."""
        return self._mac("chexnet-dicom:key-id")[:16]

    def ident(self, kind: str, value: str) -> str:
        """The pseudonym of an identifier or path of ``kind`` (``""`` stays ``""``)."""
        return self._mac(f"{kind}:{value}")[:24] if value else ""

    def shift_days(self, patient_id: str) -> int:
        """Days the patient's dates move back (1 .. :data:`MAX_SHIFT_DAYS`)."""
        return 1 + int(self._mac(f"date-shift:{patient_id}")[:12], 16) % MAX_SHIFT_DAYS

    def date(self, value: str, patient_id: str) -> str:
        """A DICOM date (YYYYMMDD) shifted by the patient's offset; ``""`` when not a date."""
        try:
            day = dt.datetime.strptime(value[:8], "%Y%m%d").date()
        except ValueError:
            return ""
        return (day - dt.timedelta(days=self.shift_days(patient_id))).strftime("%Y%m%d")

    def row(self, columns: tuple[Column, ...], row: dict[str, Any]) -> dict[str, Any]:
        """A table row with its identifier, path and date columns replaced."""
        out = dict(row)
        patient = str(row.get("patient_id", "") or "")
        for col in columns:
            value = row.get(col.name)
            if col.role == "path":
                out[col.name] = self.ident("path", str(value or ""))
            elif col.role == "id":
                out[col.name] = self.ident(col.name, str(value or ""))
            elif col.role == "date":
                out[col.name] = self.date(str(value or ""), patient)
        return out
