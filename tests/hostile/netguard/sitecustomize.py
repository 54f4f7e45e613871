"""Network guard for subprocess tests: any name lookup or connection to a non-loopback address is written
to $SFTADAPT_NETGUARD_LOG and refused (OSError), so a test can assert that an entry point never tried.

Put this folder first on PYTHONPATH; Python imports `sitecustomize` at start-up in every process it starts
(the verifier's spawned workers included)."""

import ipaddress
import os
import socket

_LOG = os.environ.get("SFTADAPT_NETGUARD_LOG")


def _local(host) -> bool:
    if host in (None, "", "localhost") or str(host).endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a name other than localhost: resolving it is already going out


def _refuse(what: str, host) -> None:
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {what} {host}\n")
    raise OSError(f"netguard: outbound {what} to {host!r} refused in this test")


_getaddrinfo = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def getaddrinfo(host, *args, **kwargs):
    if not _local(host if not isinstance(host, bytes) else host.decode()):
        _refuse("lookup", host)
    return _getaddrinfo(host, *args, **kwargs)


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse("connect", address[0])


def connect(self, address):
    _check(self, address)
    return _connect(self, address)


def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
