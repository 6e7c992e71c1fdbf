// A Rackplane rack written from the wire contract alone: docs/wire.md,
// schema/*.json and README.md. It joins, registers, beats, reports one
// OS/release/arch with one image version, and answers the info and
// capabilities rpc. It boots nothing; it is a worked example of what a
// rack in another language has to do to be one.
//
// Configuration (environment):
//   NATS_URL      nats://127.0.0.1:4222 (a user and password may go in it)
//   DATA_DIR      where the rack id is kept (file rack-id)
//   RACK_NAME     shown by the region (default: the host name)
//   HEARTBEAT_MS  heartbeat interval in milliseconds (default 2000)
//
// node rack.mjs --print-id prints the rack id (made on first use) and exits.

import { connect, StringCodec, Events } from "nats";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync, renameSync } from "node:fs";
import { hostname, networkInterfaces } from "node:os";
import { join } from "node:path";

const VERSION = "noderack/0.1.0";
const natsURL = process.env.NATS_URL || "nats://127.0.0.1:4222";
const dataDir = process.env.DATA_DIR || "./noderack-data";
const rackName = process.env.RACK_NAME || hostname();
if (rackName.length < 1 || rackName.length > 253) fail("RACK_NAME: 1 to 253 characters (rack_registered.v1)");
const heartbeatMs = parseInt(process.env.HEARTBEAT_MS || "2000", 10);
if (!(heartbeatMs >= 100 && heartbeatMs <= 3600000)) {
  // heartbeat_interval_ms and interval_ms: 100 … 3600000 in the schemas.
  fail(`HEARTBEAT_MS=${process.env.HEARTBEAT_MS}: want 100 to 3600000`);
}

function log(...args) {
  console.error(new Date().toISOString(), "noderack:", ...args);
}
function fail(msg) {
  console.error("noderack:", msg);
  process.exit(2);
}

// ---- the rack id: a UUID kept on disk (wire.md, Joining 1) -------------

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function rackID() {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, "rack-id");
  try {
    const id = readFileSync(file, "utf8").trim();
    if (!UUID_RE.test(id)) fail(`${file}: ${JSON.stringify(id)} is not a lower-case UUID`);
    return id;
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  // Lower case: the envelope's source and subject patterns allow only that.
  const id = randomUUID().toLowerCase();
  writeFileSync(file + ".tmp", id + "\n", { mode: 0o644 });
  renameSync(file + ".tmp", file);
  return id;
}

const id = rackID();
if (process.argv.includes("--print-id")) {
  // Like rackd -print-id: the id (made on first use), for the NATS
  // server's permissions (rackplane nats-permissions RACK_ID).
  console.log(id);
  process.exit(0);
}
const startedAt = new Date().toISOString();

// ---- envelopes ----------------------------------------------------------

// UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, version 7, variant 10,
// the rest random; lower case, as the envelope wants.
let lastMs = 0;
let seqInMs = 0;
function uuidv7() {
  const b = randomBytes(16);
  let ms = Date.now();
  // Keep ids of one process increasing within a millisecond (12-bit counter
  // in rand_a), so they sort in the order they were made.
  if (ms <= lastMs) {
    seqInMs++;
    if (seqInMs > 0xfff) {
      lastMs++;
      seqInMs = 0;
    }
    ms = lastMs;
  } else {
    lastMs = ms;
    seqInMs = randomBytes(2).readUInt16BE(0) & 0x7ff; // random start, room to count up
  }
  b.writeUIntBE(ms, 0, 6);
  b[6] = 0x70 | ((seqInMs >> 8) & 0x0f);
  b[7] = seqInMs & 0xff;
  b[8] = 0x80 | (b[8] & 0x3f);
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const source = `rackplane/rack/${id}`;
const stream = `rack/${id}`;

// envelope builds a CloudEvents envelope of the rack's type `name`
// (rackplane.rack.<name>.v1) on the rack's own stream rack/<id>.
function envelope(name, data) {
  return {
    specversion: "1.0",
    id: uuidv7(),
    source,
    type: `rackplane.rack.${name}.v1`,
    subject: stream,
    time: new Date().toISOString(),
    datacontenttype: "application/json",
    data,
  };
}

// ---- capabilities -------------------------------------------------------

// canonical is the JSON the digest is taken over: keys sorted (by code
// unit, which for these ASCII keys is byte order), no spaces.
function canonical(v) {
  if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
  if (v !== null && typeof v === "object") {
    return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
  }
  return JSON.stringify(v);
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

function file(name, content) {
  const bytes = Buffer.from(content);
  return { name, sha256: sha256(bytes), size: bytes.length };
}

// One OS, one release, one arch, one image version: the files are a few
// plausible bytes, the sha256 and size theirs.
const imageVersion = "20261123.1";
const capabilities = (() => {
  const c = {
    oses: [
      {
        name: "noderackos",
        title: "NodeRack OS",
        releases: [
          {
            name: "one",
            title: "NodeRack OS 1",
            default: true,
            requires_licence_key: false,
            can_commission: false,
            arches: [
              {
                arch: "amd64",
                subarch: "generic",
                versions: [
                  {
                    id: `noderackos/amd64/generic/one/stable/${imageVersion}`,
                    label: "stable",
                    version: imageVersion,
                    files: [
                      file("boot-kernel", "not really a kernel, but bytes of one\n"),
                      file("boot-initrd", "not really an initrd either\n"),
                    ],
                  },
                ],
              },
            ],
          },
        ],
      },
    ],
    bootloaders: [],
    storage_providers: [],
  };
  // capabilities.v1.json: digest is the sha256 of the canonical JSON of the
  // object without digest.
  return { digest: sha256(canonical(c)), ...c };
})();

// ---- events: a queue published to JetStream in order --------------------

// The region creates the streams; events made before NATS or the stream
// is there wait here (bounded) and are published when they can be, with
// their id as Nats-Msg-Id so a retry is never a duplicate.
const MAX_QUEUED = 10000;
const queue = [];
let dropped = 0; // in this process's life, for heartbeats and info
let lost = null; // dropped and not yet reported: {count, since, types}
let nc = null;
let js = null;
let pumping = false;
let stopping = false;

function emit(name, data) {
  const ev = envelope(name, data);
  if (queue.length >= MAX_QUEUED) {
    const old = queue.shift();
    dropped++;
    lost ??= { count: 0, since: new Date().toISOString(), types: {} }; // since: when the first was dropped
    lost.count++;
    lost.types[old.type] = (lost.types[old.type] || 0) + 1;
  }
  queue.push(ev);
  pump();
  return ev;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function pump() {
  if (pumping) return;
  pumping = true;
  try {
    let backoff = 100;
    while (queue.length > 0 && !stopping) {
      if (!js || nc.isClosed()) {
        await sleep(backoff);
        continue;
      }
      if (lost) {
        // No loss is silent: once publishing works again the count goes
        // out ahead of what was kept (events_dropped.v1).
        queue.unshift(envelope("events_dropped", lost));
        lost = null;
      }
      const ev = queue[0];
      const name = ev.type.split(".")[2];
      try {
        await js.publish(`rackplane.rack.${id}.event.${name}`, JSON.stringify(ev), {
          msgID: ev.id, // sent as the Nats-Msg-Id header
          timeout: 5000,
        });
        queue.shift();
        backoff = 100;
        log("published", ev.type, ev.id);
      } catch (e) {
        // 503 no responders: the stream is not there yet; timeouts while
        // reconnecting. Keep the event and try again.
        log("publish", ev.type, "failed, will retry:", e.message);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  } finally {
    pumping = false;
  }
}

function registered() {
  const addresses = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list || []) if (!a.internal) addresses.push(a.address);
  }
  return emit("rack_registered", {
    name: rackName,
    version: VERSION,
    hostname: hostname(),
    addresses: addresses.slice(0, 256),
    heartbeat_interval_ms: heartbeatMs,
    started_at: startedAt,
  });
}

// ---- rpc ------------------------------------------------------------------

const sc = StringCodec();

function info() {
  return {
    id,
    name: rackName,
    version: VERSION,
    started_at: startedAt,
    http: [],
    buffered_events: queue.length,
    dropped_events: dropped,
  };
}

const methods = {
  info: () => info(),
  capabilities: () => capabilities,
};

function answer(msg, method) {
  const f = methods[method];
  let reply;
  try {
    if (msg.data.length > 0) JSON.parse(sc.decode(msg.data)); // a JSON body, as the contract says
    reply = f
      ? { from: id, result: f() }
      : { from: id, error: { code: "not_found", message: `this rack does not implement ${method}` } };
  } catch (e) {
    reply = { from: id, error: { code: "invalid", message: `request body: ${e.message}` } };
  }
  if (msg.reply) msg.respond(sc.encode(JSON.stringify(reply)));
}

async function serve(sub, prefix) {
  for await (const msg of sub) {
    answer(msg, msg.subject.slice(prefix.length));
  }
}

// ---- heartbeats -------------------------------------------------------

let beat = 0;
function heartbeat() {
  if (!nc || nc.isClosed()) return;
  const ev = envelope("heartbeat", {
    seq: beat++,
    interval_ms: heartbeatMs,
    buffered_events: queue.length,
    dropped_events: dropped,
  });
  // Plain NATS, not the stream (wire.md, Subjects).
  nc.publish(`rackplane.rack.${id}.heartbeat`, sc.encode(JSON.stringify(ev)));
}

// ---- main -----------------------------------------------------------------

// natsServer splits the credentials off NATS_URL: nats.js does not take
// them from the URL as the Go client does.
function natsServer(u) {
  const url = new URL(u);
  const auth = {};
  if (url.username && url.password) {
    auth.user = decodeURIComponent(url.username);
    auth.pass = decodeURIComponent(url.password);
  } else if (url.username) {
    auth.token = decodeURIComponent(url.username);
  }
  url.username = "";
  url.password = "";
  return { servers: `${url.protocol}//${url.host}`, ...auth };
}

let timer = null;
let stopped = false;

// stop leaves cleanly on SIGTERM or SIGINT, also while still waiting for
// NATS the first time.
async function stop(sig) {
  if (stopped) return;
  stopped = true;
  log(`${sig}: stopping`);
  clearInterval(timer);
  if (nc && !nc.isClosed()) {
    // Give queued events a moment to go out, then leave cleanly.
    const deadline = Date.now() + 2000;
    while (queue.length > 0 && Date.now() < deadline) await sleep(50);
    stopping = true;
    try {
      await nc.drain();
    } catch (e) {
      log("drain:", e.message);
    }
  }
  log("stopped");
  process.exit(0);
}
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));

async function main() {
  const server = natsServer(natsURL);
  log(`rack ${id} (${rackName}) connecting to ${server.servers}`);
  nc = await connect({
    ...server,
    name: `noderack ${rackName}`,
    // wire.md: a rack's requests (JetStream included) use this prefix, the
    // only inbox `rackplane nats-permissions` lets it subscribe to.
    inboxPrefix: `_INBOX.rackplane.rack.${id}`,
    waitOnFirstConnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
  });
  js = nc.jetstream();
  log("connected to", nc.getServer());

  const own = `rackplane.rack.${id}.rpc.`;
  serve(nc.subscribe(own + ">"), own);

  (async () => {
    for await (const s of nc.status()) {
      // Errors (a permissions violation among them) are logged as they are.
      log("nats status:", s.type, typeof s.data === "string" ? s.data : s.data?.message ?? JSON.stringify(s.data));
      if (s.type === Events.Reconnect) {
        // wire.md, Joining 3; and the snapshot again, as rackd does, in
        // case it was among dropped events.
        registered();
        emit("capabilities_reported", capabilities);
        heartbeat();
      }
    }
  })();

  // Subscriptions before announcing ourselves, so an rpc that follows
  // rack_registered finds them.
  await nc.flush();
  registered();
  emit("capabilities_reported", capabilities);
  heartbeat();
  timer = setInterval(heartbeat, heartbeatMs);

  const err = await nc.closed();
  if (!stopped) {
    log("connection closed", err ? err.message : "");
    process.exit(1);
  }
}

main().catch((e) => {
  log("fatal:", e.message);
  process.exit(1);
});
