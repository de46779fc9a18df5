# decode.py CAPTURE: prints each banana expression of a relay.py capture,
# per direction and in order, with Twisted's own banana decoder.
import sys
from twisted.spread import banana
class B(banana.Banana):
    def __init__(self, tag, client):
        super().__init__(isClient=client); self.tag = tag
        self.connectionMade = None
        self.setPrefixLimit(64); self.currentDialect = None
        self.transport = None
    def expressionReceived(self, e): print(self.tag, repr(e))
    def callExpressionReceived(self, obj):
        if self.currentDialect is None:
            print(self.tag, "dialect", repr(obj))
            if isinstance(obj, bytes): self.other.currentDialect = obj; self.currentDialect = obj
            return
        self.expressionReceived(obj)
for line in open(sys.argv[1]):
    if line.startswith("#"):
        print(line.strip()); m = B("M>S", True); s = B("S>M", False); m.other = s; s.other = m; continue
    tag, t, h = line.split()
    (m if tag == "M>S" else s).dataReceived(bytes.fromhex(h))
