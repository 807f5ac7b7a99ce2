// The web front: /enqueue?n=N puts a job in Redis for the worker;
// /result?n=N shows what the worker stored; /status shows what it sees.
// Redis is spoken directly (RESP), so no npm packages are needed.
const http = require("http");
const net = require("net");

const redisHost = process.env.REDIS_HOST || "127.0.0.1";
const redisPort = Number(process.env.REDIS_PORT || 6379);

// One command per connection: simple and enough for a demo.
function redis(...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(redisPort, redisHost);
    let buf = "";
    sock.on("error", reject);
    sock.on("data", (d) => {
      buf += d.toString();
      const nl = buf.indexOf("\r\n");
      if (nl < 0) return;
      const head = buf.slice(0, nl);
      if (head[0] === "$") {
        const len = Number(head.slice(1));
        if (len < 0) return done(null);
        if (buf.length < nl + 2 + len) return;
        return done(buf.slice(nl + 2, nl + 2 + len));
      }
      if (head[0] === "-") return fail(new Error(head.slice(1)));
      return done(head.slice(1));
    });
    const done = (v) => (sock.end(), resolve(v));
    const fail = (e) => (sock.end(), reject(e));
    sock.write(
      `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join("")
    );
  });
}

http
  .createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    const n = url.searchParams.get("n");
    try {
      if (url.pathname === "/enqueue" && /^[0-9]+$/.test(n || "")) {
        await redis("LPUSH", "jobs", n);
        res.end(`queued ${n}\n`);
      } else if (url.pathname === "/result" && /^[0-9]+$/.test(n || "")) {
        const v = await redis("GET", `result:${n}`);
        res.statusCode = v === null ? 404 : 200;
        res.end(`${v === null ? "pending" : v}\n`);
      } else {
        res.end(`web up; cache says worker=${await redis("GET", "worker")}\n`);
      }
    } catch (e) {
      res.statusCode = 502;
      res.end(`cache error: ${e.message}\n`);
    }
  })
  .listen(Number(process.env.PORT || 8080), "0.0.0.0");
