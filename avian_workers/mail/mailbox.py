"""The alert mailbox over IMAP (imapclient): read unseen mail without marking it, then file it.

Reading never changes a message: bodies are fetched with `BODY.PEEK[]` (a plain `BODY[]` or
`RFC822` fetch sets `\\Seen`), so a crash before the outcome is committed loses nothing.
Filing a message (`mark_processed`, `mark_for_review`) adds `\\Seen` and moves it with MOVE.
A server without MOVE gets `\\Seen` only, unless `move_fallback="copy_expunge"` opts into
COPY + `\\Deleted` + `UID EXPUNGE` of exactly the copied UIDs (needs UIDPLUS); nothing else is
ever deleted, and the session ends with LOGOUT, never CLOSE (CLOSE expunges every `\\Deleted`
message in the folder, including other clients').

TLS is implicit by default and certificates are always verified (system trust store, or the
configured CA bundle); STARTTLS and plain text are used only when configured, and STARTTLS never
falls back to plain text. Errors are `MailboxError` subclasses whose messages never contain the
password or access token.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from pydantic import SecretStr

from avian_workers.logs import get_logger, register_secret
from avian_workers.mail._imap_sets import chunked, uid_set, unique_uids

TlsMode = Literal["implicit", "starttls", "plain"]
AuthMethod = Literal["password", "xoauth2"]
MoveFallback = Literal["flag_only", "copy_expunge"]
MarkOutcome = Literal["moved", "flagged"]
"""What filing did: moved to the target folder, or (server without MOVE) only flagged `\\Seen`."""

TokenProvider = Callable[[], str]
"""Returns a current OAuth access token for XOAUTH2 (e.g. MSAL client credentials)."""

MAX_UIDS_PER_COMMAND = 5_000

_SEEN = b"\\Seen"
_DELETED = b"\\Deleted"
_FETCH_ITEMS = [b"BODY.PEEK[]", b"INTERNALDATE"]
_BODY = b"BODY[]"  # the server answers a BODY.PEEK[] request under this key
_INTERNALDATE = b"INTERNALDATE"

_log = get_logger(component="mailbox")


_UNAVAILABLE = "[UNAVAILABLE]"
"""RFC 5530 response code for a temporary authentication failure."""


class MailboxError(Exception):
    """The mailbox could not be used; the message never contains a password or token."""


class MailboxConnectionError(MailboxError):
    """The server could not be reached, timed out or dropped the connection (worth a retry)."""


class MailboxTLSError(MailboxError):
    """TLS could not be established or the server certificate failed verification."""


class MailboxAuthError(MailboxError):
    """The server refused the login, or no access token could be obtained."""


class MailboxCommandError(MailboxError):
    """The server refused a command (folder cannot be created or selected, read-only inbox...)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MailboxConfig:
    """Where the alert mailbox is and how to use it."""

    host: str
    port: int = 993
    username: str
    password: SecretStr | str | None = field(default=None, repr=False)
    tls_mode: TlsMode = "implicit"
    ca_bundle: str | None = None
    """PEM file of trusted CAs; None uses the system trust store (honours SSL_CERT_FILE)."""
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    inbox_folder: str = "INBOX"
    processed_folder: str = "Processed"
    review_folder: str = "Review"
    fetch_batch_size: int = 200
    uids_per_command: int = 500
    """Most UIDs named in one STORE/MOVE/COPY/EXPUNGE; longer lists are sent in chunks."""
    auth: AuthMethod = "password"
    move_fallback: MoveFallback = "flag_only"
    """Without MOVE: only flag `\\Seen`, or copy + `\\Deleted` + UID EXPUNGE (needs UIDPLUS)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.host:
            problems.append("host is empty")
        if not 1 <= self.port <= 65535:
            problems.append(f"port {self.port} is not between 1 and 65535")
        if not self.username:
            problems.append("username is empty")
        if self.auth == "password" and not _secret_text(self.password):
            problems.append("password login needs a password")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            problems.append("timeouts must be positive")
        for name in ("fetch_batch_size", "uids_per_command"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_UIDS_PER_COMMAND:
                problems.append(f"{name} {value} is not between 1 and {MAX_UIDS_PER_COMMAND}")
        folders = {
            "inbox_folder": self.inbox_folder,
            "processed_folder": self.processed_folder,
            "review_folder": self.review_folder,
        }
        problems += [f"{name} is empty" for name, value in folders.items() if not value]
        if len({value.casefold() for value in folders.values()}) != len(folders):
            problems.append("inbox, processed and review folders must be three different folders")
        if problems:
            raise ValueError("invalid mailbox configuration: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """One message exactly as the server stores it, with the identity it has in the mailbox."""

    uid: int
    uidvalidity: int
    raw: bytes = field(repr=False)
    internal_date: datetime | None


class Mailbox:
    """A logged-in session on the alert mailbox with the inbox selected read-write.

    Use it as a context manager: entering connects, logs in, creates missing folders and selects
    the inbox; leaving logs out.
    """

    def __init__(self, config: MailboxConfig, *, token_provider: TokenProvider | None = None):
        if config.auth == "xoauth2" and token_provider is None:
            raise ValueError("XOAUTH2 login needs a token provider")
        self._config = config
        self._token_provider = token_provider
        self._secrets: list[str] = [s for s in (_secret_text(config.password),) if s]
        self._client: Any = None
        self._uidvalidity: int | None = None
        self._can_move = False
        self._can_uid_expunge = False

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def uidvalidity(self) -> int:
        """UIDVALIDITY of the selected inbox: UIDs are only meaningful together with it."""
        if self._uidvalidity is None:
            raise MailboxError("the mailbox is not open")
        return self._uidvalidity

    @property
    def filing(self) -> MarkOutcome:
        """What `mark_processed`/`mark_for_review` will do on this server."""
        self._require_client()
        if self._can_move or (
            self._config.move_fallback == "copy_expunge" and self._can_uid_expunge
        ):
            return "moved"
        return "flagged"

    def open(self) -> None:
        """Connect, log in, create missing folders and select the inbox read-write."""
        if self._client is not None:
            raise MailboxError("the mailbox is already open")
        for secret in self._secrets:
            register_secret(secret)
        self._client = self._connect()
        try:
            self._login()
            self._client.normalise_times = False  # timezone-aware INTERNALDATE
            self._ensure_folders()
            self._select_inbox()
            with self._imap_errors("read the server's capabilities"):
                self._can_move = bool(self._client.has_capability("MOVE"))
                self._can_uid_expunge = bool(self._client.has_capability("UIDPLUS"))
        except BaseException:
            self.close()
            raise
        if self.filing == "flagged":
            _log.warning(
                "IMAP server lacks MOVE: filed messages are only flagged \\Seen",
                host=self._config.host,
                move_fallback=self._config.move_fallback,
            )

    def close(self) -> None:
        """Log out (never CLOSE, which would expunge). Safe to call more than once."""
        client, self._client = self._client, None
        self._uidvalidity = None
        if client is None:
            return
        try:
            client.logout()
        except (IMAPClientError, OSError):
            with suppress(OSError, IMAPClientError):
                client.shutdown()

    def unseen_uids(self) -> list[int]:
        """UIDs of every unread message in the inbox, ascending."""
        client = self._require_client()
        # A plain UNSEEN search: no `UID n:*` range, which always matches the newest message.
        with self._imap_errors("search for unseen mail"):
            found = client.search(["UNSEEN"])
        return sorted(int(uid) for uid in found)

    def fetch_batches(
        self, uids: Sequence[int], batch_size: int | None = None
    ) -> Iterator[list[FetchedMessage]]:
        """The messages in batches, one `UID FETCH` of `BODY.PEEK[]` per batch; nothing is marked.

        A UID that no longer exists (expunged by someone else since the search) is left out.
        """
        client = self._require_client()
        size = self._config.fetch_batch_size if batch_size is None else batch_size
        if not 1 <= size <= MAX_UIDS_PER_COMMAND:
            raise ValueError(f"batch_size {size} is not between 1 and {MAX_UIDS_PER_COMMAND}")
        uidvalidity = self.uidvalidity
        for chunk in chunked(unique_uids(uids), size):
            with self._imap_errors("fetch messages"):
                # imapclient needs a list here: it filters the response by these UIDs.
                response = client.fetch(list(chunk), _FETCH_ITEMS)
            batch = [
                _fetched_message(uid, uidvalidity, response[uid])
                for uid in chunk
                if uid in response and _BODY in response[uid]
            ]
            if batch:
                yield batch

    def mark_processed(self, uids: Iterable[int]) -> MarkOutcome:
        """Flag `\\Seen` and move to the processed folder (flag only where MOVE is missing)."""
        return self._file(uids, self._config.processed_folder)

    def mark_for_review(self, uids: Iterable[int]) -> MarkOutcome:
        """Flag `\\Seen` and move to the review folder (flag only where MOVE is missing)."""
        return self._file(uids, self._config.review_folder)

    def _file(self, uids: Iterable[int], folder: str) -> MarkOutcome:
        client = self._require_client()
        outcome = self.filing
        for chunk in chunked(unique_uids(uids), self._config.uids_per_command):
            uids_text = uid_set(chunk)
            # \Seen first: whatever happens next, the message is not read a second time.
            with self._imap_errors("flag messages \\Seen"):
                client.add_flags(uids_text, [_SEEN], silent=True)
            if outcome == "flagged":
                continue
            if self._can_move:
                with self._imap_errors(f"move messages to {folder!r}"):
                    client.move(uids_text, folder)
                continue
            with self._imap_errors(f"copy messages to {folder!r}"):
                client.copy(uids_text, folder)
            # Expunge exactly the UIDs just copied (UID EXPUNGE), never the whole folder.
            with self._imap_errors("remove copied messages from the inbox"):
                client.add_flags(uids_text, [_DELETED], silent=True)
                client.uid_expunge(uids_text)
        return outcome

    def _connect(self) -> Any:
        config = self._config
        context = None if config.tls_mode == "plain" else self._ssl_context()
        with self._imap_errors("connect"):
            client = IMAPClient(
                config.host,
                port=config.port,
                use_uid=True,
                ssl=config.tls_mode == "implicit",
                ssl_context=context,
                timeout=SocketTimeout(connect=config.connect_timeout, read=config.read_timeout),
            )
        if config.tls_mode != "starttls":
            return client
        try:
            with self._imap_errors("start TLS"):
                if not client.has_capability("STARTTLS"):
                    raise MailboxTLSError(f"{self._where}: the server does not offer STARTTLS")
                client.starttls(context)
        except BaseException:
            with suppress(OSError, IMAPClientError):
                client.shutdown()
            raise
        return client

    def _ssl_context(self) -> ssl.SSLContext:
        cafile = self._config.ca_bundle
        try:
            return ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise MailboxTLSError(f"CA bundle {cafile!r} cannot be loaded: {exc}") from exc

    def _login(self) -> None:
        config = self._config
        if config.auth == "password":
            password = _secret_text(config.password)
            with self._imap_errors(f"log in as {config.username!r}"):
                self._client.login(config.username, password)
            return
        token = self._access_token()
        with self._imap_errors(f"log in as {config.username!r} with XOAUTH2"):
            self._client.oauth2_login(config.username, token)

    def _access_token(self) -> str:
        assert self._token_provider is not None  # checked in __init__
        try:
            token = self._token_provider()
        except Exception as exc:
            raise MailboxAuthError(
                self._redact(f"no access token for XOAUTH2: {type(exc).__name__}: {exc}")
            ) from exc
        if not token:
            raise MailboxAuthError("no access token for XOAUTH2: the token provider returned none")
        self._secrets.append(token)
        return token

    def _ensure_folders(self) -> None:
        client = self._client
        config = self._config
        for folder in (config.inbox_folder, config.processed_folder, config.review_folder):
            with self._imap_errors(f"look up folder {folder!r}"):
                if client.folder_exists(folder):
                    continue
            try:
                with self._imap_errors(f"create folder {folder!r}"):
                    client.create_folder(folder)
            except MailboxCommandError:
                # Someone else may have created it meanwhile; only a folder still missing is fatal.
                with self._imap_errors(f"look up folder {folder!r}"):
                    if client.folder_exists(folder):
                        continue
                raise
            _log.info("Created IMAP folder", folder=folder, host=config.host)

    def _select_inbox(self) -> None:
        folder = self._config.inbox_folder
        with self._imap_errors(f"select folder {folder!r}"):
            selected = self._client.select_folder(folder, readonly=False)
        if not selected.get(b"READ-WRITE"):
            raise MailboxCommandError(f"{self._where}: folder {folder!r} is read-only")
        uidvalidity = selected.get(b"UIDVALIDITY")
        if uidvalidity is None:
            raise MailboxCommandError(f"{self._where}: folder {folder!r} has no UIDVALIDITY")
        self._uidvalidity = int(uidvalidity)

    def _require_client(self) -> Any:
        if self._client is None:
            raise MailboxError("the mailbox is not open")
        return self._client

    @property
    def _where(self) -> str:
        return f"IMAP {self._config.host}:{self._config.port}"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    @contextmanager
    def _imap_errors(self, action: str) -> Iterator[None]:
        """Turn socket, TLS and imapclient errors into `MailboxError`s with a redacted message."""
        where = self._where
        try:
            yield
        except MailboxError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise MailboxTLSError(
                self._redact(f"{where}: certificate verification failed: {exc.verify_message}")
            ) from exc
        except ssl.SSLError as exc:
            raise MailboxTLSError(
                self._redact(f"{where}: TLS failed while trying to {action}: {exc}")
            ) from exc
        except LoginError as exc:
            reply = _server_text(exc)
            # No chained cause: the login error is the only place a server could echo input.
            if _UNAVAILABLE in reply.upper():
                # RFC 5530: the server could not check the credentials right now (its
                # token introspection or user database is down); a later try can succeed.
                raise MailboxConnectionError(
                    self._redact(f"{where}: login temporarily unavailable: {reply}")
                ) from None
            raise MailboxAuthError(self._redact(f"{where}: login refused: {reply}")) from None
        except TimeoutError as exc:
            raise MailboxConnectionError(
                f"{where}: timed out while trying to {action}"
                f" (connect {self._config.connect_timeout:g}s, read {self._config.read_timeout:g}s)"
            ) from exc
        except IMAPClientAbortError as exc:
            raise MailboxConnectionError(
                self._redact(f"{where}: connection lost while trying to {action}: {exc}")
            ) from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise MailboxConnectionError(
                self._redact(f"{where}: could not {action}: {reason}")
            ) from exc
        except IMAPClientError as exc:
            raise MailboxCommandError(
                self._redact(f"{where}: server refused to {action}: {_server_text(exc)}")
            ) from exc


def _fetched_message(uid: int, uidvalidity: int, data: dict[bytes, Any]) -> FetchedMessage:
    raw = data[_BODY]
    internal_date = data.get(_INTERNALDATE)
    return FetchedMessage(
        uid=uid,
        uidvalidity=uidvalidity,
        raw=bytes(raw) if raw is not None else b"",
        internal_date=internal_date.astimezone(UTC)
        if isinstance(internal_date, datetime)
        else None,
    )


def _secret_text(secret: SecretStr | str | None) -> str:
    if isinstance(secret, SecretStr):
        return secret.get_secret_value()
    return secret or ""


def _server_text(exc: Exception) -> str:
    """The server's words from an imapclient error, which sometimes arrive as a bytes repr."""
    text = str(exc)
    if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]
    return text
