// A tiny dev server: the page is read from disk on every request, so an
// edit on the host shows at once. PORT and HOST come from mvm (detected
// from package.json: port 3000, forwarded to the host's 3000).
const http = require("http");
const fs = require("fs");
const path = require("path");

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || "0.0.0.0";

http
  .createServer((req, res) => {
    if (req.url === "/health") {
      res.end("ok\n");
      return;
    }
    const page = fs.readFileSync(path.join(__dirname, "page.txt"), "utf8");
    res.setHeader("content-type", "text/plain");
    res.end(`${page.trim()} (node ${process.version})\n`);
  })
  .listen(port, host, () => console.log(`listening on ${host}:${port}`));
