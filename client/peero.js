// peero.js is the reference browser client of the Peero protocol (protocol.md):
// it joins a room, builds a full mesh of RTCPeerConnections with one
// RTCDataChannel per pair of peers, and lets you send text over them.
//
//   const room = new Peero("ws://localhost:8080/chat");
//   room.addEventListener("message", (e) => console.log(e.detail.id, e.detail.data));
//   room.addEventListener("open", (e) => room.send(e.detail.id, "hi"));
//
// Events (CustomEvent, details in e.detail):
//   ready   {id}           the server gave us our id
//   join    {id}           a peer is in the room (listed when we joined, or announced later)
//   state   {id, state}    the RTCPeerConnection to a peer changed state
//   open    {id}           the DataChannel to a peer is open: send to it now
//   message {id, data}     a peer sent us text
//   leave   {id}           a peer left; its connection is closed
//   error   {error}        the server refused a message, or the connection to it failed
//
// It has no imports and no exports: it defines globalThis.Peero, so it loads
// both as an ES module (import "./peero.js") and as a classic <script src>.
// The classic form is what lets index.html work from file://, where browsers
// refuse to import modules.
class Peero extends EventTarget {
  #ws;
  #peers = new Map(); // peer id -> {pc, channel, candidates (queued until the remote description is set)}
  #pinger;
  #awaitingPong = false;

  // url is ws://HOST:PORT/ROOM. iceServers is passed to every RTCPeerConnection;
  // leave it empty on one machine, add STUN/TURN servers for the internet.
  constructor(url, { iceServers = [], pingInterval = 15000 } = {}) {
    super();
    this.id = null;
    this.iceServers = iceServers;
    this.#ws = new WebSocket(url);
    this.#ws.onmessage = (e) => this.#receive(JSON.parse(e.data)).catch((err) => this.#error(String(err)));
    this.#ws.onclose = () => {
      clearInterval(this.#pinger);
      this.#error("the connection to the server closed");
    };
    // Browsers hide WebSocket pings, so ask the server for a pong now and then.
    this.#pinger = setInterval(() => {
      if (this.#awaitingPong) {
        this.#error("the server did not answer a ping");
        this.#ws.close();
      }
      this.#awaitingPong = true;
      this.#signal({ type: "ping" });
    }, pingInterval);
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

  // close leaves the room: it closes every peer connection and the server connection.
  close() {
    clearInterval(this.#pinger);
    this.#ws.onclose = null;
    this.#ws.close();
    for (const id of this.peers) this.#remove(id);
  }

  async #receive(msg) {
    switch (msg.type) {
      case "peers":
        if (this.id !== null) return; // a reply to a peers request; we do not send those
        this.id = msg.id;
        this.#emit("ready", { id: msg.id });
        // We are the newcomer: we offer to everyone here, and they never offer
        // to us, so two sides never offer to each other at once.
        for (const id of msg.peers) {
          const peer = this.#connect(id);
          this.#attach(id, peer.pc.createDataChannel("peero"));
          await peer.pc.setLocalDescription();
          this.#signal({ type: "offer", peerId: id, signal: peer.pc.localDescription });
        }
        return;
      case "announce":
        this.#connect(msg.peerId); // the newcomer will offer
        return;
      case "offer": {
        // From a newcomer, or an untargeted offer (the original Peero flow).
        const peer = this.#peers.get(msg.peerId) ?? this.#connect(msg.peerId);
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
        this.#awaitingPong = false;
        return;
      case "error":
        this.#error(msg.error);
    }
  }

  // #connect makes the RTCPeerConnection to peer id and announces the peer.
  #connect(id) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const peer = { pc, channel: null, candidates: [] };
    this.#peers.set(id, peer);
    pc.onicecandidate = (e) => {
      // The last event has a null candidate: the protocol does not carry it.
      if (e.candidate) this.#signal({ type: "candidate", peerId: id, signal: e.candidate });
    };
    pc.onconnectionstatechange = () => this.#emit("state", { id, state: pc.connectionState });
    pc.ondatachannel = (e) => this.#attach(id, e.channel);
    this.#emit("join", { id });
    return peer;
  }

  #attach(id, channel) {
    this.#peers.get(id).channel = channel;
    channel.onopen = () => this.#emit("open", { id });
    channel.onmessage = (e) => this.#emit("message", { id, data: e.data });
  }

  async #setRemote(peer, description) {
    await peer.pc.setRemoteDescription(description);
    for (const candidate of peer.candidates.splice(0)) await peer.pc.addIceCandidate(candidate);
  }

  #remove(id) {
    const peer = this.#peers.get(id);
    if (!peer) return;
    this.#peers.delete(id);
    peer.pc.close();
    this.#emit("leave", { id });
  }

  #signal(msg) {
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(msg));
  }

  #error(error) {
    this.#emit("error", { error });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

globalThis.Peero = Peero;
