"""A throwaway CA with one server and one client certificate, laid out as libvirt's TLS wants."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# libvirt's remote driver (client) and libvirtd (server) check these extensions: a server cert
# must say serverAuth and name the address the client dialled (an IP needs an IP SAN, since
# libvirt matches the URI's host against the certificate); a cert without digitalSignature and
# keyEncipherment is refused when keyUsage is critical.
_LEAF_EXTENSIONS = ("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage={purpose}\n")
_DAYS = "2"  # a test run's certificates need not outlive it


class PkiError(RuntimeError):
    """openssl failed; the message carries its output."""


@dataclass(frozen=True)
class Pki:
    """Where the certificates are.

    server_dir holds cacert.pem, servercert.pem and serverkey.pem (libvirtd.conf's ca_file,
    cert_file and key_file point there); client_dir is the `pkipath` of a client URI and holds
    cacert.pem, clientcert.pem and clientkey.pem, the names libvirt looks for in a pkipath.
    """

    ca_dir: Path
    server_dir: Path
    client_dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.server_dir / "cacert.pem"

    @property
    def server_cert(self) -> Path:
        return self.server_dir / "servercert.pem"

    @property
    def server_key(self) -> Path:
        return self.server_dir / "serverkey.pem"


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PkiError(f"openssl {' '.join(args[:2])} failed ({result.stderr.strip()}); "
                       "is openssl installed (scripts/setup.sh installs it)?")


def _make_ca(ca_dir: Path) -> tuple[Path, Path]:
    ca_dir.mkdir(mode=0o700, parents=True)
    key, cert = ca_dir / "cakey.pem", ca_dir / "cacert.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", _DAYS, "-subj", "/O=iaas tests/CN=iaas test CA",
             "-config", "/dev/null", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return key, cert


def _make_leaf(ca: tuple[Path, Path], out_dir: Path, stem: str, subject: str,
               extensions: str) -> None:
    """Write <stem>key.pem and <stem>cert.pem into out_dir, signed by ca (key, cert)."""
    key, cert = out_dir / f"{stem}key.pem", out_dir / f"{stem}cert.pem"
    csr, ext = out_dir / f"{stem}.csr", out_dir / f"{stem}.ext"
    ext.write_text(extensions)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
             str(csr), "-subj", subject, "-config", "/dev/null")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
             "-CAcreateserial", "-CAserial", str(out_dir / f"{stem}.srl"), "-days", _DAYS,
             "-extfile", str(ext), "-out", str(cert))
    for scrap in (csr, ext, out_dir / f"{stem}.srl"):
        scrap.unlink(missing_ok=True)
    key.chmod(0o600)


def pki_under(root: Path) -> Pki:
    """Where make_pki(root, ...) puts the certificates."""
    return Pki(ca_dir=root / "ca", server_dir=root / "server", client_dir=root / "client")


def make_pki(root: Path, server_ip: str) -> Pki:
    """A CA, a server cert for server_ip (CN and IP subjectAltName) and a client cert, under root.

    Raises: PkiError when openssl fails.
    """
    pki = pki_under(root)
    ca = _make_ca(pki.ca_dir)
    for side in (pki.server_dir, pki.client_dir):
        side.mkdir(mode=0o700, parents=True)
        (side / "cacert.pem").write_bytes(ca[1].read_bytes())
    _make_leaf(ca, pki.server_dir, "server", f"/O=iaas tests/CN={server_ip}",
               _LEAF_EXTENSIONS.format(purpose="serverAuth")
               + f"subjectAltName=IP:{server_ip}\n")
    _make_leaf(ca, pki.client_dir, "client", "/O=iaas tests/CN=iaas test client",
               _LEAF_EXTENSIONS.format(purpose="clientAuth"))
    return pki
