// peero.js is the reference browser client of the Peero protocol (protocol.md):
// it joins a room, builds a full mesh of RTCPeerConnections with one
// RTCDataChannel per pair of peers, lets you send text over them, and joins
// again by itself, as itself, when the server goes away.
//
//   const room = new Peero("ws://localhost:8080/chat");
//   room.addEventListener("message", (e) => console.log(e.detail.id, e.detail.data));
//   room.addEventListener("open", (e) => room.send(e.detail.id, "hi"));
//
// Events (CustomEvent, details in e.detail):
//   ready        {id, resumed}   we joined the room and the server gave us our id (again after each rejoin);
//                                resumed: it is the id we had before, brought back by our resume token
//   join         {id}            a peer is in the room (listed when we joined, or announced later)
//   state        {id, state}     the RTCPeerConnection to a peer changed state
//   open         {id}            the DataChannel to a peer is open: send to it now
//   message      {id, data}      a peer sent us text
//   leave        {id, rejoinedAs} a peer left, or our connection to it ended; the connection is closed.
//                                rejoinedAs is set when the same peer is connected again under a new id
//   reconnecting {delay, attempt, reason}  the server is lost; the next try (attempt 1, 2, …) is in delay ms
//   replaced     {id, error}     another connection took our id with our resume token; we have
//                                stopped, as after close(), and will not reconnect
//   iceerror     {id, url, code, text}     a STUN or TURN server refused us (401: wrong credentials)
//   error        {error}         the server refused a message or is full
//
// Losing the server. When the connection to the server closes, or the server
// says nothing for pingInterval (we ping it, so it always has something to
// say), peero.js tries the same URL again after a delay, and again, until
// close() is called. The delays double from reconnect.first (0.5 s) up to
// reconnect.max (30 s); each is a random time between half and all of that,
// so that clients of a restarted server do not all come back at once. Each
// success is a join: a new "ready", and attempts count from 1 again.
//
// Keeping our id. Every peers message carries a resume token; peero.js keeps
// the latest (each reply to its peers requests brings a fresh one, and it asks
// for one before the last expires) and reconnects with it, as
// ws://HOST/ROOM?resume=TOKEN. The server then gives our id back: after a
// dropped network, after a restart of a server that kept its $PEERO_SECRET,
// or on another instance behind the same proxy that shares it; "ready" says
// resumed. The token is a bearer credential: whoever has it can take our id.
// peero.js keeps it in memory only; serve Peero over wss:// in production.
//
// Peer connections need no server once they are up, so they stay open while
// it is away, and messages still flow. When we and a peer both come back with
// our ids, the connection between us is kept: no leave, no join, nothing
// negotiated again. If the server did see us go (it told the room, and the
// peers closed their ends), we connect to them again: leave, then join.
//
// When the ids do not come back (a server with a new secret, or none, which
// draws a new one at each start; a token older than the server's -resume-ttl),
// the join is fresh: a new id, and the mesh is built again under the ids of
// the new peers list. The connections from before are closed:
//   - at once, if their channel is not open: their negotiation cannot finish;
//   - when the same peer is connected again under its new id. Every Peero
//     client uses one DTLS certificate for all its connections, so a new
//     connection whose remote certificate has the fingerprint of an old one's
//     goes to the same peer; its "leave" says rejoinedAs;
//   - when their channel closes or they fail, as for a peer that never comes
//     back.
// So a peer is never reached through two open channels, and two peers that
// both rejoin are never without one for longer than it takes to connect.
//
// Replaced. If another connection joins with our token while we are in the
// room (someone got hold of the token), the server gives it our id and
// closes our connection with an error that says so. peero.js then stops, as
// after close(): every peer connection closes ("leave"), "replaced" fires,
// and it does not reconnect, which would take the id back and start a tug of
// war. One exception: a try to join that we gave up on (the server was slow
// to answer) may still reach the server later and take our place; after such
// a try peero.js reconnects once instead of stopping.
//
// ICE servers. The server may hand out TURN credentials in its peers list
// (iceServers); they are used for every connection made after that join,
// before those given to the constructor. Shortly before they expire,
// peero.js asks the server for fresh ones with a peers request. Pass
// iceTransportPolicy: "relay" to connect only through TURN.
//
// It has no imports and no exports: it defines globalThis.Peero, so it loads
// both as an ES module (import "./peero.js") and as a classic <script src>.
// The classic form is what lets index.html work from file://, where browsers
// refuse to import modules.
class Peero extends EventTarget {
  #url;
  #options;
  #ws = null;
  #heard = false; // whether the server said anything since the last ping
  #pinger;
  #retry; // the timer of the next try to reach the server
  #attempt = 0; // tries since the server was lost
  #closed = false;
  #session = 0; // counts joins; connections remember the one they were made in
  #resume = null; // the latest resume token: reconnecting with it brings our id back
  #lastId = null; // the id of our latest join, to tell a resumed join from a fresh one
  #abandoned = false; // whether we gave up on a try to join that the server may still take
  #lateTries = false; // whether this session began after such a try
  #serverIceServers = []; // from the latest peers message
  #refresh; // the timer that asks for a fresh resume token and TURN credentials
  #certificate = null; // one for every connection: how a peer is recognised after a rejoin
  #peers = new Map(); // peer id -> {pc, channel, session, owed, fingerprint (the remote certificate's), candidates (queued until the remote description is set)}

  // url is ws://HOST:PORT/ROOM. Options:
  //   iceServers          added to every RTCPeerConnection, after the server's;
  //                       empty is right on one machine or one LAN
  //   iceTransportPolicy  "all" (default) or "relay" (through TURN only)
  //   pingInterval        ms between pings; the server is lost when it says
  //                       nothing for that long (default 15000)
  //   reconnect           {first, max}: ms before the first try to reach a lost
  //                       server, and the most between two tries (500, 30000)
  constructor(url, { iceServers = [], iceTransportPolicy = "all", pingInterval = 15000, reconnect = {} } = {}) {
    super();
    this.id = null; // our id, null while we are not in the room
    this.iceServers = iceServers;
    this.#url = url;
    this.#options = { iceTransportPolicy, pingInterval, first: reconnect.first ?? 500, max: reconnect.max ?? 30000 };
    RTCPeerConnection.generateCertificate({ name: "ECDSA", namedCurve: "P-256" })
      .then((c) => (this.#certificate = c), () => {}) // without one, each connection makes its own
      .finally(() => this.#closed || this.#open());
  }

  // peers returns the ids of the peers we know of, connected or not.
  get peers() {
    return [...this.#peers.keys()];
  }

  // send sends text to one peer; it returns false if its channel is not open.
  send(id, text) {
    const channel = this.#peers.get(id)?.channel;
    if (channel?.readyState !== "open") return false;
    channel.send(text);
    return true;
  }

  // broadcast sends text to every peer whose channel is open and returns how many.
  broadcast(text) {
    return this.peers.filter((id) => this.send(id, text)).length;
  }

  // route resolves to how the connection to peer id goes: the candidate types
  // ("host", "srflx", "prflx", or "relay": through a TURN server) of the local
  // and remote ends of its selected candidate pair, as {local, remote}, or to
  // null while none is selected.
  async route(id) {
    const pc = this.#peers.get(id)?.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    let pair = null;
    for (const s of stats.values()) {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    }
    // Firefox has no selectedCandidatePairId; it marks the pair instead.
    pair ??= [...stats.values()].find((s) => s.type === "candidate-pair" && s.selected);
    if (!pair) return null;
    const type = (candidateId) => stats.get(candidateId)?.candidateType;
    return { local: type(pair.localCandidateId), remote: type(pair.remoteCandidateId) };
  }

  // close leaves the room for good: it stops reconnecting and closes every
  // peer connection and the server connection.
  close() {
    this.#closed = true;
    clearTimeout(this.#retry);
    clearTimeout(this.#refresh);
    clearInterval(this.#pinger);
    if (this.#ws) this.#ws.onclose = this.#ws.onmessage = null;
    this.#ws?.close();
    for (const id of this.peers) this.#remove(id);
  }

  // #open connects to the server, with our resume token if we have one. The
  // server must say something (its peers list first, then pongs) within every
  // pingInterval, or it is lost.
  #open() {
    let url = this.#url;
    if (this.#resume !== null) url += (url.includes("?") ? "&" : "?") + "resume=" + encodeURIComponent(this.#resume);
    const ws = new WebSocket(url);
    this.#ws = ws;
    this.#heard = false;
    ws.onmessage = (e) => {
      this.#heard = true;
      this.#receive(JSON.parse(e.data)).catch((err) => this.#error(String(err)));
    };
    ws.onclose = () => this.#lost("the connection to the server closed");
    // Browsers hide WebSocket pings, so we ask for pongs in messages.
    this.#pinger = setInterval(() => {
      if (!this.#heard) {
        this.#lost(this.id === null ? "the server did not let us join in time" : "the server did not answer a ping");
        return;
      }
      this.#heard = false;
      this.#signal({ type: "ping" });
    }, this.#options.pingInterval);
  }

  // #lost drops the server connection and schedules the next try.
  #lost(reason) {
    clearInterval(this.#pinger);
    clearTimeout(this.#refresh);
    // A try the server has not answered yet may still reach it, and join with our token.
    if (this.id === null && this.#ws.readyState !== WebSocket.CLOSED) this.#abandoned = true;
    this.#ws.onclose = this.#ws.onmessage = null; // the connection is abandoned: nothing more from it
    this.#ws.close();
    this.id = null;
    const { first, max } = this.#options;
    const ceiling = Math.min(first * 2 ** this.#attempt, max);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.#attempt++;
    this.#retry = setTimeout(() => this.#open(), delay);
    this.#emit("reconnecting", { delay, attempt: this.#attempt, reason });
  }

  async #receive(msg) {
    switch (msg.type) {
      case "peers":
        if (this.id !== null) {
          this.#keep(msg); // the reply to our request for a fresh token and credentials
          return;
        }
        this.#join(msg);
        // We are the newcomer: we offer to everyone here, and they never offer
        // to us, so two sides never offer to each other at once. A peer we
        // still know is one we kept a connection to: nothing to offer.
        for (const id of msg.peers) {
          if (!this.#peers.has(id)) await this.#offer(id);
        }
        return;
      case "announce": {
        const known = this.#peers.get(msg.peerId);
        // It came back as itself, and the room never saw it go: keep the connection.
        if (known?.channel?.readyState === "open") return;
        if (known) this.#remove(msg.peerId);
        this.#connect(msg.peerId); // the newcomer will offer
        return;
      }
      case "offer": {
        // From a newcomer, or an untargeted offer (the original Peero flow).
        // Peero clients never negotiate twice: an offer is for a new
        // connection, so it replaces any connection to that peer but the one
        // made for it when the peer was announced.
        let peer = this.#peers.get(msg.peerId);
        if (peer && (peer.channel !== null || peer.pc.signalingState !== "stable" || peer.pc.remoteDescription)) {
          this.#remove(msg.peerId);
          peer = undefined;
        }
        peer ??= this.#connect(msg.peerId);
        await this.#setRemote(peer, msg.signal);
        await peer.pc.setLocalDescription();
        this.#signal({ type: "answer", peerId: msg.peerId, signal: peer.pc.localDescription });
        return;
      }
      case "answer": {
        const peer = this.#peers.get(msg.peerId);
        if (peer) await this.#setRemote(peer, msg.signal);
        return;
      }
      case "candidate": {
        const peer = this.#peers.get(msg.peerId);
        if (!peer) return;
        if (peer.pc.remoteDescription) await peer.pc.addIceCandidate(msg.signal);
        else peer.candidates.push(msg.signal);
        return;
      }
      case "remove":
        this.#remove(msg.peerId);
        return;
      case "pong":
        return;
      case "error":
        if (msg.error.startsWith("replaced:")) this.#replaced(msg.error);
        else this.#error(msg.error);
    }
  }

  // #join starts a session in the room from its first peers message.
  #join(msg) {
    const resumed = msg.id === this.#lastId;
    this.id = this.#lastId = msg.id;
    this.#attempt = 0;
    this.#session++;
    this.#lateTries = this.#abandoned;
    this.#abandoned = false;
    this.#keep(msg);
    for (const [id, peer] of this.#peers) {
      const listed = msg.peers.includes(id);
      // Connections from before that are not up cannot come up: their
      // signals went through the old server connection.
      if (peer.channel?.readyState !== "open") this.#remove(id);
      // We are back as ourselves: a listed peer is too, and the connection
      // is kept. We owe it the offer we make to listed peers, should the
      // connection end (it does if the peer was told we left).
      else if (resumed && listed) peer.owed = this.#session;
      // We have a new id. A listed peer we still know kept its id while we
      // were away: it sees a stranger offer, so it gets a new connection.
      else if (listed) this.#remove(id);
    }
    this.#emit("ready", { id: msg.id, resumed });
  }

  // #keep keeps what a peers message hands out, our resume token and the
  // server's ICE servers, and asks for fresh ones a while before either
  // expires: Peero's tokens are "ID.EXPIRY.MAC" and its TURN usernames
  // "EXPIRY:ID", with EXPIRY in Unix seconds.
  #keep(msg) {
    this.#resume = msg.resume ?? null;
    this.#serverIceServers = msg.iceServers ?? [];
    clearTimeout(this.#refresh);
    const expiries = [parseInt(this.#resume?.split(".")[1]), ...this.#serverIceServers.map((s) => parseInt(s.username))];
    const expiry = Math.min(...expiries.filter((t) => t > 0)) * 1000;
    const wait = (expiry - Date.now()) * 0.9; // Infinity when nothing expires
    if (wait > 0 && wait !== Infinity) {
      this.#refresh = setTimeout(() => this.#signal({ type: "peers" }), Math.min(wait, 2 ** 31 - 1)); // setTimeout's most
    }
  }

  // #offer makes a connection to peer id, with its DataChannel, and offers it.
  async #offer(id) {
    const peer = this.#connect(id);
    this.#attach(id, peer.pc.createDataChannel("peero"));
    await peer.pc.setLocalDescription();
    this.#signal({ type: "offer", peerId: id, signal: peer.pc.localDescription });
  }

  // #connect makes the RTCPeerConnection to peer id and announces the peer.
  #connect(id) {
    const pc = new RTCPeerConnection({
      iceServers: [...this.#serverIceServers, ...this.iceServers],
      iceTransportPolicy: this.#options.iceTransportPolicy,
      certificates: this.#certificate ? [this.#certificate] : undefined,
    });
    const peer = { pc, channel: null, session: this.#session, owed: 0, fingerprint: null, candidates: [] };
    this.#peers.set(id, peer);
    pc.onicecandidate = (e) => {
      // The last event has a null candidate: the protocol does not carry it.
      if (e.candidate) this.#signal({ type: "candidate", peerId: id, signal: e.candidate });
    };
    pc.onicecandidateerror = (e) => this.#emit("iceerror", { id, url: e.url, code: e.errorCode, text: e.errorText });
    pc.onconnectionstatechange = () => {
      this.#emit("state", { id, state: pc.connectionState });
      // A connection from before a rejoin has no server to mend it.
      if (pc.connectionState === "failed" && peer.session !== this.#session) this.#ended(id, peer);
    };
    pc.ondatachannel = (e) => this.#attach(id, e.channel);
    this.#emit("join", { id });
    return peer;
  }

  #attach(id, channel) {
    const peer = this.#peers.get(id);
    peer.channel = channel;
    channel.onopen = () => {
      // Older connections to the same client are closed now that this one is up.
      const old = this.#sameClient(peer);
      if (old !== undefined) this.#remove(old, id);
      this.#emit("open", { id });
    };
    channel.onmessage = (e) => this.#emit("message", { id, data: e.data });
    channel.onclose = () => this.#ended(id, peer);
  }

  // #ended closes the connection peer to peer id, which ended by itself,
  // unless it was closed or replaced already. If we kept it when we resumed
  // instead of offering, and the peer is not connected under another id, we
  // offer now.
  #ended(id, peer) {
    if (this.#peers.get(id) !== peer) return;
    const rejoinedAs = this.#sameClient(peer);
    this.#remove(id, rejoinedAs);
    if (peer.owed === this.#session && this.id !== null && rejoinedAs === undefined) {
      this.#offer(id).catch((err) => this.#error(String(err)));
    }
  }

  // #sameClient returns the id of another connection to the client at the
  // other end of peer, if there is one.
  #sameClient(peer) {
    for (const [id, other] of this.#peers) {
      if (other !== peer && other.fingerprint !== null && other.fingerprint === peer.fingerprint) return id;
    }
    return undefined;
  }

  async #setRemote(peer, description) {
    await peer.pc.setRemoteDescription(description);
    peer.fingerprint = /^a=fingerprint:\S+ (\S+)/m.exec(description.sdp)?.[1].toUpperCase() ?? null;
    for (const candidate of peer.candidates.splice(0)) await peer.pc.addIceCandidate(candidate);
  }

  #remove(id, rejoinedAs) {
    const peer = this.#peers.get(id);
    if (!peer) return;
    this.#peers.delete(id);
    peer.pc.close();
    this.#emit("leave", rejoinedAs ? { id, rejoinedAs } : { id });
  }

  // #replaced handles the server's word that a connection with our token
  // took our id. If we gave up on a try to join before this session, that try
  // may be what the server took, late: we reconnect, once. Otherwise another
  // client has our token, and we stop rather than take the id back.
  #replaced(error) {
    if (this.#lateTries) {
      this.#lateTries = false;
      this.#lost("a try of ours that the server took late replaced us");
      return;
    }
    const id = this.id;
    this.close();
    this.id = null;
    this.#emit("replaced", { id, error });
  }

  #signal(msg) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(msg));
  }

  #error(error) {
    this.#emit("error", { error });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

globalThis.Peero = Peero;
