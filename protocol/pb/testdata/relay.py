# relay.py LISTEN_PORT TARGET_PORT OUTFILE [MAX_CONNECTIONS]: a TCP relay on
# 127.0.0.1 that logs every chunk as "<dir> <unix time> <hex>" lines (S>M:
# slave to master, M>S: master to slave) and each connection as a
# "# connection N" line. After MAX_CONNECTIONS relayed
# connections it refuses further ones.
import asyncio, sys, time
lp, tp, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
limit = int(sys.argv[4]) if len(sys.argv) > 4 else 0
f = open(out, "a")
n = [0]
async def pipe(r, w, tag):
    while True:
        d = await r.read(65536)
        if not d:
            break
        f.write("%s %.6f %s\n" % (tag, time.time(), d.hex())); f.flush()
        w.write(d); await w.drain()
    w.close()
async def handle(cr, cw):
    if limit and n[0] >= limit:
        cw.close()
        return
    try:
        sr, sw = await asyncio.open_connection("127.0.0.1", tp)
    except OSError as e:
        print("relay: %s" % e, file=sys.stderr)
        cw.close()
        return
    n[0] += 1
    f.write("# connection %d\n" % n[0]); f.flush()
    await asyncio.gather(pipe(cr, sw, "S>M"), pipe(sr, cw, "M>S"), return_exceptions=True)
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", lp)
    async with s: await s.serve_forever()
asyncio.run(main())
