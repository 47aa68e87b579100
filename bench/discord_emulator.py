"""A small Discord API emulator for end-to-end tests and load measurements of the real, unpatched
discord.py client (tests/test_discord_bot.py and `newsdesk bench`'s discord_load section).

It serves the REST API and the gateway websocket on 127.0.0.1 (see ../shared/notes/discord-emulator.md),
in its own thread with its own event loop, so the bot's event loop is measured on its own. It
records every REST call, answers the ones a bot makes with plausible payloads, and lets a test
inject INTERACTION_CREATE and MESSAGE_CREATE events. Unknown routes answer 404 and are recorded,
so a test can assert the bot made no call the emulator does not know.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import WSMsgType, web
from discord.gateway import DiscordWebSocket
from discord.http import Route

API_PREFIX = "/api/v10"
MESSAGE_CONTENT_INTENT = 1 << 15
MANAGE_GUILD = 1 << 5
SEND_MESSAGES = 1 << 11
# Discord's defaults for @everyone that the bot's posting needs: view, send, embed links, read
# history, create public threads, send in threads.
EVERYONE = (1 << 10) | SEND_MESSAGES | (1 << 14) | (1 << 16) | (1 << 35) | (1 << 38)
EPHEMERAL = 1 << 6

UNKNOWN_ROUTE = {"message": "404: Not Found", "code": 0}

# Option types in interaction payloads.
SUB_COMMAND, STRING, CHANNEL = 1, 3, 7


@dataclass(frozen=True)
class Call:
    """One REST request the bot made: method, path (without the API prefix), query and JSON body."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    at: float = field(default_factory=time.monotonic)
    token: str = ""  # the bot token it came with: which of several bot processes made it
    unknown: bool = False  # a route the emulator does not know (not a 404 Discord would give, like Unknown Channel)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class DiscordEmulator:
    """One application with one bot user in a few guilds, each with a #general and an #ask channel.

    The gateway takes any number of connections, each IDENTIFYing as a shard (`[id, count]`, as
    discord.py's AutoShardedBot does), and sends each the events of its guilds only. Guild ids are
    chosen so that guild i falls on shard i % count.
    """

    def __init__(self, *, guilds: int = 2, shards: int = 1, nonce_seconds: float = 300.0) -> None:
        self._ids = itertools.count(1_200_000_000_000_000_000)
        self.application_id = self.new_id()
        self.bot_user = self.user("newsdesk", bot=True)
        self.shard_count = shards  # what GET /gateway/bot recommends
        # A guild's shard is (id >> 22) % count: these ids put guild i on shard i % count.
        self.guild_ids = [(1_200_000 + i) << 22 for i in range(guilds)]
        self.channels: dict[int, dict] = {}  # id -> channel payload (text channels and threads)
        self.roles: dict[int, list[dict]] = {}
        for guild_id in self.guild_ids:
            self.roles[guild_id] = [
                self._role(guild_id, "@everyone", 0, permissions=EVERYONE),
                self._role(self.new_id(), "News Admin", 1),
            ]
            # #notices is read-only for everyone, the bot included (its @everyone role cannot post there).
            for name, overwrites in (("general", []), ("ask", []), ("notices", [
                    {"id": str(guild_id), "type": 0, "allow": "0", "deny": str(SEND_MESSAGES)}])):
                channel_id = self.new_id()
                self.channels[channel_id] = {
                    "id": str(channel_id), "type": 0, "guild_id": str(guild_id), "name": name,
                    "position": len(self.channels), "permission_overwrites": overwrites, "nsfw": False,
                    "topic": None, "last_message_id": None, "rate_limit_per_user": 0, "parent_id": None,
                }
        self.messages: dict[int, list[dict]] = {}  # channel id -> messages, oldest first
        self.commands: dict[str, dict] = {}  # name -> synced command
        self._interaction_channels: dict[str, int] = {}  # interaction token -> its channel
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._shards: dict[int, web.WebSocketResponse] = {}  # shard id -> its connection
        self._connected_count = 1  # the shard count the connections identified with
        # (channel, nonce) -> (when, the message it created): Discord matches a nonce for a few minutes only
        self._nonces: dict[tuple[int, str], tuple[float, dict]] = {}
        self.nonce_seconds = nonce_seconds
        self.identified: list[tuple[int, int]] = []  # (shard id, count) of every IDENTIFY
        # channel id -> seconds a bot's message there is held before the answer (after it is made)
        self.hold_messages: dict[int, float] = {}
        self.intents = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._endpoints = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- ids and payloads ----------------------------------------------------------------------

    def new_id(self) -> int:
        return next(self._ids)

    def user(self, name: str, *, bot: bool = False) -> dict:
        return {"id": str(self.new_id()), "username": name, "discriminator": "0", "global_name": name,
                "avatar": None, "bot": bot}

    @staticmethod
    def _role(role_id: int, name: str, position: int, *, permissions: int = 0) -> dict:
        return {"id": str(role_id), "name": name, "permissions": str(permissions), "position": position, "color": 0,
                "hoist": False, "managed": False, "mentionable": False, "flags": 0}

    def channel(self, name: str, guild: int = 0) -> int:
        """The id of the channel called `name` in the guild with index `guild`."""
        guild_id = str(self.guild_ids[guild])
        return next(int(c["id"]) for c in self.channels.values() if c["guild_id"] == guild_id and c["name"] == name)

    def admin_role(self, guild: int = 0) -> dict:
        return self.roles[self.guild_ids[guild]][1]

    def member(self, user: dict, *, roles: Iterable[int] = (), permissions: int = 0) -> dict:
        return {"user": user, "roles": [str(r) for r in roles], "flags": 0, "joined_at": _now(), "deaf": False,
                "mute": False, "permissions": str(permissions)}

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def start(self) -> DiscordEmulator:
        # A bot started against the emulator points discord.py's process-wide endpoints here
        # (bot.discordbot.endpoints.point_at); stop() puts back what was there before.
        self._endpoints = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="discord-emulator", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the Discord emulator did not start")
        return self

    def _serve(self, started: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._endpoints

    def __enter__(self) -> DiscordEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the bot did ------------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def find(self, method: str, path_start: str, where: Callable[[Call], bool] = lambda c: True) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path.startswith(path_start) and where(c)]

    async def wait_for(
        self, method: str, path_start: str, where: Callable[[Call], bool] = lambda c: True, *, count: int = 1,
        timeout: float = 20.0,
    ) -> list[Call]:
        """Wait (in the caller's loop) until `count` matching calls were made; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(method, path_start, where)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} calls {method} {path_start}… after {timeout} s")
            await asyncio.sleep(0.01)

    # -- events a test injects -------------------------------------------------------------------

    async def interaction(
        self, name: str, options: dict[str, Any] | None = None, *, user: dict, guild: int = 0,
        channel: str = "general", subcommand: str | None = None, permissions: int = 0, roles: Iterable[int] = (),
        autocomplete: str | None = None,
    ) -> dict:
        """Inject a slash command (or, with `autocomplete` naming the focused option, an autocomplete).

        Option values are strings, or a channel payload (from `self.channels`) for a channel option.
        Returns the interaction payload, whose `id` and `token` name the REST calls that answer it.
        """
        guild_id, channel_id = self.guild_ids[guild], self.channel(channel, guild)
        resolved: dict[str, dict] = {}
        opts = []
        for key, value in (options or {}).items():
            if isinstance(value, dict):  # a channel
                resolved.setdefault("channels", {})[value["id"]] = {**value, "permissions": "0"}
                opts.append({"name": key, "type": CHANNEL, "value": value["id"]})
            else:
                option = {"name": key, "type": STRING, "value": value}
                if key == autocomplete:
                    option["focused"] = True
                opts.append(option)
        if subcommand:
            opts = [{"name": subcommand, "type": SUB_COMMAND, "options": opts}]
        command = self.commands.get(name, {})
        data = {"id": command.get("id", str(self.new_id())), "name": name, "type": 1, "options": opts,
                "guild_id": str(guild_id)}
        if resolved:
            data["resolved"] = resolved
        payload = {
            "id": str(self.new_id()), "application_id": str(self.application_id), "type": 4 if autocomplete else 2,
            "version": 1, "token": f"token-{self.new_id()}", "attachment_size_limit": 8_388_608,
            "guild_id": str(guild_id), "channel_id": str(channel_id),
            "channel": {"id": str(channel_id), "type": 0, "guild_id": str(guild_id),
                        "name": self.channels[channel_id]["name"]},
            "member": self.member(user, roles=roles, permissions=permissions), "data": data, "locale": "en-US",
            "guild_locale": "en-US", "app_permissions": str((1 << 53) - 1), "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)}, "context": 0,
        }
        self._interaction_channels[payload["token"]] = channel_id
        await self._dispatch_from_caller("INTERACTION_CREATE", payload)
        return payload

    async def message(
        self, content: str, *, user: dict, guild: int = 0, channel: str | int = "general",
        mentions: Iterable[dict] = (),
    ) -> dict:
        """Inject a member's message; `channel` is a channel name or a (thread) channel id."""
        channel_id = channel if isinstance(channel, int) else self.channel(channel, guild)
        message = self._message(channel_id, user, content, mentions=list(mentions))
        await self._dispatch_from_caller("MESSAGE_CREATE", message)
        return message

    def messages_in(self, channel_id: int | str) -> list[dict]:
        with self._lock:
            return list(self.messages.get(int(channel_id), []))

    async def _dispatch_from_caller(self, event: str, data: dict) -> None:
        future = asyncio.run_coroutine_threadsafe(self._dispatch(event, data), self._loop)
        await asyncio.wrap_future(future)

    # -- gateway ---------------------------------------------------------------------------------

    def shard_of(self, guild_id: int, count: int | None = None) -> int:
        return (int(guild_id) >> 22) % (count or self._connected_count)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        shard = 0
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            if message["op"] == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif message["op"] == 2:
                self.intents = message["d"].get("intents", 0)
                shard, count = message["d"].get("shard") or (0, 1)
                self.identified.append((shard, count))
                self._connected_count = count
                self._shards[shard] = ws
                await self._ready(shard, count)
            elif message["op"] == 6:
                await self._send(ws, "RESUMED", {})
        if self._shards.get(shard) is ws:
            del self._shards[shard]
        return ws

    async def _ready(self, shard: int, count: int) -> None:
        ws = self._shards[shard]
        guilds = [g for g in self.guild_ids if self.shard_of(g, count) == shard]
        await self._send(ws, "READY", {
            "v": 10, "user": self.bot_user, "session_id": f"emulated-session-{shard}",
            "resume_gateway_url": self.gateway_url, "shard": [shard, count],
            "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
            "application": {"id": str(self.application_id), "flags": 0}, "private_channels": [],
            "relationships": [],
        })
        for guild_id in guilds:
            await self._send(ws, "GUILD_CREATE", {
                "id": str(guild_id), "name": f"guild {guild_id}", "owner_id": str(self.new_id()),
                "member_count": 2, "roles": self.roles[guild_id], "emojis": [], "stickers": [], "features": [],
                "channels": [c for c in self.channels.values() if c["guild_id"] == str(guild_id) and c["type"] == 0],
                "threads": [], "members": [self.member(self.bot_user)], "voice_states": [], "presences": [],
                "unavailable": False,
            })

    async def _dispatch(self, event: str, data: dict, *, listened: bool = True) -> None:
        """An event to the connection of the shard its guild is on (shard 0 for events of no guild).
        With `listened` false (an echo of the bot's own call), no connection on that shard is no error."""
        if event == "MESSAGE_CREATE":
            self._store(data)
            bot_mentioned = any(m["id"] == self.bot_user["id"] for m in data.get("mentions", []))
            if not (self.intents & MESSAGE_CONTENT_INTENT or bot_mentioned or data["author"] == self.bot_user):
                data = {**data, "content": ""}  # what Discord sends a bot without the Message Content intent
        shard = self.shard_of(data["guild_id"]) if data.get("guild_id") else 0
        ws = self._shards.get(shard)
        if ws is None:
            if not listened:
                return
            raise RuntimeError(f"no bot is connected on shard {shard} to receive {event}")
        await self._send(ws, event, data)

    async def _send(self, ws: web.WebSocketResponse, event: str, data: dict) -> None:
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": next(self._sequence), "d": data}))

    # -- REST --------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body = await self._body(request)
        status, reply = await self._route(request.method, path, body, dict(request.query))
        token = request.headers.get("Authorization", "").removeprefix("Bot ")
        with self._lock:
            self._calls.append(Call(request.method, path, dict(request.query), body, status, token=token,
                                    unknown=reply == UNKNOWN_ROUTE))
        if request.method == "POST" and path.endswith("/messages") and path.startswith("/channels/"):
            # Made and recorded, but not yet answered: what a client killed now leaves behind.
            await asyncio.sleep(self.hold_messages.get(int(path.split("/")[2]), 0))
        if reply is None:
            return web.Response(status=status)
        # Exactly "application/json": discord.py treats anything else as text.
        headers = {"Content-Type": "application/json"}
        return web.Response(status=status, body=json.dumps(reply).encode(), headers=headers)

    @staticmethod
    async def _body(request: web.Request) -> Any:
        if request.content_type == "application/json":
            return await request.json()
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            return json.loads(form["payload_json"]) if "payload_json" in form else None
        return None

    async def _route(self, method: str, path: str, body: Any, query: dict) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        app = str(self.application_id)
        match method, parts:
            case "GET", ["users", "@me"]:
                return 200, self.bot_user
            case "GET", ["oauth2", "applications", "@me"]:
                return 200, {"id": app, "name": "newsdesk", "description": "", "icon": None, "bot_public": True,
                             "bot_require_code_grant": False, "owner": self.user("owner"), "verify_key": "0" * 64,
                             "flags": 0}
            case "GET", ["gateway", *_]:
                return 200, {"url": self.gateway_url, "shards": self.shard_count,
                             "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0,
                                                     "max_concurrency": 1}}
            case "PUT", ["applications", _, "commands"] | ["applications", _, "guilds", _, "commands"]:
                return 200, self._sync(body, guild_id=parts[3] if len(parts) == 5 else None)
            case "POST", ["interactions", interaction_id, token, "callback"]:
                return 200, self._callback(interaction_id, token, body)
            case "POST", ["webhooks", _, token]:
                return 200, self._webhook_message(token, body)
            case "PATCH", ["webhooks", _, token, "messages", "@original"]:
                return 200, self._webhook_message(token, body)
            case "DELETE", ["webhooks", _, _, "messages", _]:
                return 204, None
            case "POST", ["channels", channel_id, "messages"] if int(channel_id) not in self.channels:
                return 404, {"message": "Unknown Channel", "code": 10003}
            case "POST", ["channels", channel_id, "messages"]:
                key = (int(channel_id), str(body.get("nonce")))
                seen = self._nonces.get(key) if body.get("enforce_nonce") else None
                if seen and time.monotonic() - seen[0] < self.nonce_seconds:
                    return 200, seen[1]  # Discord's answer to a nonce it has seen lately: the first message
                message = self._message(int(channel_id), self.bot_user, body.get("content") or "",
                                        embeds=body.get("embeds", []))
                if body.get("enforce_nonce"):
                    self._nonces[key] = (time.monotonic(), message)
                await self._dispatch("MESSAGE_CREATE", message, listened=False)
                return 200, message
            case "GET", ["channels", channel_id, "messages"]:
                return 200, self._history(int(channel_id), query)
            case "GET", ["channels", channel_id, "messages", message_id]:
                found = [m for m in self.messages_in(channel_id) if m["id"] == message_id]
                return (200, found[0]) if found else (404, {"message": "Unknown Message", "code": 10008})
            case "PATCH", ["channels", channel_id, "messages", message_id]:
                edited = self._edit(int(channel_id), message_id, body)
                return (200, edited) if edited else (404, {"message": "Unknown Message", "code": 10008})
            case "DELETE", ["channels", channel_id, "messages", message_id]:
                with self._lock:
                    stored = self.messages.get(int(channel_id), [])
                    kept = [m for m in stored if m["id"] != message_id]
                    self.messages[int(channel_id)] = kept
                return (204, None) if len(kept) < len(stored) else (404, {"message": "Unknown Message", "code": 10008})
            case "POST", ["channels", channel_id, "messages", message_id, "threads"]:
                thread = self._open_thread(int(channel_id), int(message_id), body["name"])
                await self._dispatch("THREAD_CREATE", {**thread, "newly_created": True}, listened=False)
                return 201, thread
            case "GET", ["channels", channel_id]:
                channel = self.channels.get(int(channel_id))
                return (200, channel) if channel else (404, {"message": "Unknown Channel", "code": 10003})
            case "POST", ["channels", _, "typing"]:
                return 204, None
            case "PUT", ["channels", _, "messages", _, "reactions", _, "@me"]:
                return 204, None
        return 404, UNKNOWN_ROUTE

    def _sync(self, commands: list[dict], *, guild_id: str | None) -> list[dict]:
        synced = []
        for command in commands:
            entry = {**command, "id": str(self.new_id()), "application_id": str(self.application_id),
                     "version": str(self.new_id())}
            if guild_id:
                entry["guild_id"] = guild_id
            self.commands[command["name"]] = entry
            synced.append(entry)
        return synced

    def _callback(self, interaction_id: str, token: str, body: dict) -> dict:
        kind = body["type"]
        data = body.get("data") or {}
        result: dict = {"interaction": {"id": interaction_id, "type": 2,
                                        "response_message_loading": kind == 5,
                                        "response_message_ephemeral": bool(data.get("flags", 0) & EPHEMERAL)},
                        "resource": {"type": kind}}
        if kind in (4, 5):
            message = self._webhook_message(token, data, store=kind == 4)  # "thinking…" is no message to keep
            result["interaction"]["response_message_id"] = message["id"]
            result["resource"]["message"] = message
        return result

    def _webhook_message(self, token: str, body: dict | None, *, store: bool = True) -> dict:
        """The message a follow-up (or the original response) becomes; ephemeral ones are not stored."""
        body = body or {}
        flags = body.get("flags", 0)
        message = self._message(self._interaction_channels.get(token, 0), self.bot_user, body.get("content") or "",
                                embeds=body.get("embeds", []), flags=flags, store=store and not flags & EPHEMERAL)
        message["webhook_id"] = str(self.application_id)
        return message

    def _message(
        self, channel_id: int, author: dict, content: str, *, mentions: list[dict] | None = None,
        embeds: list | None = None, flags: int = 0, store: bool = False,
    ) -> dict:
        channel = self.channels.get(channel_id, {})
        message = {
            "id": str(self.new_id()), "type": 0, "channel_id": str(channel_id), "author": author,
            "content": content, "timestamp": _now(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": mentions or [], "mention_roles": [], "attachments": [],
            "embeds": embeds or [], "pinned": False, "flags": flags, "components": [],
        }
        if channel.get("guild_id"):
            message["guild_id"] = channel["guild_id"]
            if author is not self.bot_user:
                message["member"] = {k: v for k, v in self.member(author).items() if k != "user"}
        if store:
            self._store(message)
        return message

    def _edit(self, channel_id: int, message_id: str, body: dict) -> dict | None:
        """A stored message with the edited fields replaced, as Discord returns it; None if there is none."""
        with self._lock:
            for message in self.messages.get(channel_id, []):
                if message["id"] == message_id:
                    message.update({k: v for k, v in body.items() if k in ("content", "embeds", "flags")},
                                   edited_timestamp=_now())
                    return dict(message)
        return None

    def _store(self, message: dict) -> None:
        with self._lock:
            stored = self.messages.setdefault(int(message["channel_id"]), [])
            if not any(m["id"] == message["id"] for m in stored):
                stored.append(message)

    def _history(self, channel_id: int, query: dict) -> list[dict]:
        messages = self.messages_in(channel_id)
        if "before" in query:
            messages = [m for m in messages if int(m["id"]) < int(query["before"])]
        if "after" in query:
            messages = [m for m in messages if int(m["id"]) > int(query["after"])]
        limit = int(query.get("limit", 50))
        return list(reversed(messages))[:limit]  # newest first, as Discord returns them

    def _open_thread(self, channel_id: int, message_id: int, name: str) -> dict:
        parent = self.channels[channel_id]
        thread = {
            "id": str(message_id), "type": 11, "guild_id": parent["guild_id"], "parent_id": str(channel_id),
            "owner_id": self.bot_user["id"], "name": name, "message_count": 0, "member_count": 1,
            "rate_limit_per_user": 0, "last_message_id": None, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": _now(),
                                "locked": False},
        }
        self.channels[message_id] = thread
        return thread
