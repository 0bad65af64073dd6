package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"golang.org/x/net/websocket"
)

// pionPeer is a small Go client of the Peero protocol whose peer connections
// are pion's. It answers every offer it gets and can make offers itself.
type pionPeer struct {
	t   *testing.T
	ws  *websocket.Conn
	id  string
	api *webrtc.API

	// config is used for every peer connection: the server's ICE servers,
	// and the ICE transport policy a test may set before it offers.
	config webrtc.Configuration

	opened   chan string // ids of peers whose DataChannel opened
	messages chan string // "id: text" for each message received

	mu        sync.Mutex // guards the fields below
	pcs       map[string]*webrtc.PeerConnection
	channels  map[string]*webrtc.DataChannel
	pending   map[string][]webrtc.ICECandidateInit // candidates that came before the remote description
	broadcast *webrtc.PeerConnection               // an untargeted offer's connection, until someone answers it
}

// signal is a Peero message, either way.
type signal struct {
	Type   string          `json:"type"`
	ID     string          `json:"id,omitempty"`
	Peers  []string        `json:"peers,omitempty"`
	PeerID string          `json:"peerId,omitempty"`
	Signal json.RawMessage `json:"signal,omitempty"`
	Error  string          `json:"error,omitempty"`

	IceServers []webrtc.ICEServer `json:"iceServers,omitempty"` // in peers, when the server hands out TURN credentials
}

// newPionPeer joins url (ws://HOST/ROOM) and returns once it has its id.
// Everything it opened is closed when the test ends.
func newPionPeer(t *testing.T, url string) (*pionPeer, []string) {
	t.Helper()
	// The recipe of README.md: loopback only, UDP4, no mDNS.
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	ws, err := websocket.Dial(url, "", "http://localhost/")
	if err != nil {
		t.Fatalf("pion: dial %s: %v", url, err)
	}
	p := &pionPeer{t: t, ws: ws, api: webrtc.NewAPI(webrtc.WithSettingEngine(se)),
		opened: make(chan string, 16), messages: make(chan string, 16),
		pcs: map[string]*webrtc.PeerConnection{}, channels: map[string]*webrtc.DataChannel{},
		pending: map[string][]webrtc.ICECandidateInit{}}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var first signal
	if err := websocket.JSON.Receive(ws, &first); err != nil || first.Type != "peers" {
		t.Fatalf("pion: first message %+v, %v; want peers", first, err)
	}
	ws.SetReadDeadline(time.Time{})
	p.id = first.ID
	p.config.ICEServers = first.IceServers
	done := make(chan struct{})
	go p.readLoop(done) // ends when the connection closes
	t.Cleanup(func() {
		ws.Close()
		<-done
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pc := range p.pcs {
			pc.Close()
		}
		if p.broadcast != nil {
			p.broadcast.Close()
		}
	})
	return p, first.Peers
}

func (p *pionPeer) send(msg signal) {
	if err := websocket.JSON.Send(p.ws, msg); err != nil {
		p.t.Logf("pion: send %s: %v", msg.Type, err)
	}
}

// newConnection makes a peer connection; with trickle, its candidates are
// sent to peerID as they come, else they travel inside the SDP.
func (p *pionPeer) newConnection(peerID string, trickle bool) *webrtc.PeerConnection {
	pc, err := p.api.NewPeerConnection(p.config)
	if err != nil {
		p.t.Errorf("pion: %v", err)
		return nil
	}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil && trickle {
			s, _ := json.Marshal(c.ToJSON())
			p.send(signal{Type: "candidate", PeerID: peerID, Signal: s})
		}
	})
	pc.OnDataChannel(func(dc *webrtc.DataChannel) { p.attach(peerID, dc) })
	return pc
}

// attach records dc as the channel to peerID (for an untargeted offer, once
// the answer names it) and reports its opening and messages.
func (p *pionPeer) attach(peerID string, dc *webrtc.DataChannel) {
	p.mu.Lock()
	p.channels[peerID] = dc
	p.mu.Unlock()
	dc.OnOpen(func() { p.opened <- peerID })
	dc.OnMessage(func(m webrtc.DataChannelMessage) { p.messages <- peerID + ": " + string(m.Data) })
}

// offerTo offers to one peer, trickling candidates: the reference client's way.
func (p *pionPeer) offerTo(peerID string) {
	pc := p.newConnection(peerID, true)
	dc, err := pc.CreateDataChannel("peero", nil)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.pcs[peerID] = pc
	p.mu.Unlock()
	p.attach(peerID, dc)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		p.t.Fatal(err)
	}
	s, _ := json.Marshal(pc.LocalDescription())
	p.send(signal{Type: "offer", PeerID: peerID, Signal: s})
}

// broadcastOffer is the original Peero flow: one complete, non-trickle offer
// to the whole room. The first peer to answer gets the connection.
func (p *pionPeer) broadcastOffer(ctx context.Context) {
	pc := p.newConnection("", false)
	dc, err := pc.CreateDataChannel("peero", nil)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.broadcast = pc
	p.mu.Unlock()
	dc.OnOpen(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for id, c := range p.pcs {
			if c == pc {
				p.channels[id] = dc
				dc.OnMessage(func(m webrtc.DataChannelMessage) { p.messages <- id + ": " + string(m.Data) })
				p.opened <- id
			}
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		p.t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		p.t.Fatal("pion: ICE gathering did not complete")
	}
	s, _ := json.Marshal(pc.LocalDescription()) // now with every candidate in it
	p.send(signal{Type: "offer", Signal: s})
}

// route returns the candidate types of the local and remote ends of the
// selected candidate pair of the connection to peerID.
func (p *pionPeer) route(peerID string) (local, remote webrtc.ICECandidateType) {
	p.t.Helper()
	p.mu.Lock()
	pc := p.pcs[peerID]
	p.mu.Unlock()
	if pc == nil || pc.SCTP() == nil {
		p.t.Fatalf("pion: no connection to %s", peerID)
	}
	pair, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		p.t.Fatalf("pion: selected candidate pair to %s: %v, %v", peerID, pair, err)
	}
	return pair.Local.Typ, pair.Remote.Typ
}

// sendText sends text over the open channel to peerID.
func (p *pionPeer) sendText(peerID, text string) {
	p.mu.Lock()
	dc := p.channels[peerID]
	p.mu.Unlock()
	if dc == nil {
		p.t.Fatalf("pion: no channel to %s", peerID)
	}
	if err := dc.SendText(text); err != nil {
		p.t.Fatalf("pion: send to %s: %v", peerID, err)
	}
}

// waitOpen waits for the channel to peerID to open.
func (p *pionPeer) waitOpen(ctx context.Context, peerID string) {
	p.t.Helper()
	for {
		select {
		case id := <-p.opened:
			if id == peerID {
				return
			}
		case <-ctx.Done():
			p.t.Fatalf("pion: no channel opened to %s", peerID)
		}
	}
}

// waitMessage waits for text from peerID.
func (p *pionPeer) waitMessage(ctx context.Context, peerID, text string) {
	p.t.Helper()
	want := peerID + ": " + text
	for {
		select {
		case m := <-p.messages:
			if m == want {
				return
			}
		case <-ctx.Done():
			p.t.Fatalf("pion: never got %q", want)
		}
	}
}

// readLoop handles the server's messages until the connection closes.
func (p *pionPeer) readLoop(done chan<- struct{}) {
	defer close(done)
	for {
		var msg signal
		if err := websocket.JSON.Receive(p.ws, &msg); err != nil {
			return
		}
		if err := p.handle(msg); err != nil {
			p.t.Errorf("pion: %s from %s: %v", msg.Type, msg.PeerID, err)
		}
	}
}

func (p *pionPeer) handle(msg signal) error {
	switch msg.Type {
	case "offer":
		pc := p.newConnection(msg.PeerID, true)
		p.mu.Lock()
		p.pcs[msg.PeerID] = pc
		p.mu.Unlock()
		var offer webrtc.SessionDescription
		if err := json.Unmarshal(msg.Signal, &offer); err != nil {
			return err
		}
		if err := p.setRemote(msg.PeerID, pc, offer); err != nil {
			return err
		}
		answer, err := pc.CreateAnswer(nil)
		if err != nil {
			return err
		}
		if err := pc.SetLocalDescription(answer); err != nil {
			return err
		}
		s, _ := json.Marshal(pc.LocalDescription())
		p.send(signal{Type: "answer", PeerID: msg.PeerID, Signal: s})
	case "answer":
		p.mu.Lock()
		pc := p.pcs[msg.PeerID]
		if pc == nil && p.broadcast != nil { // the first answer to our untargeted offer
			pc, p.broadcast = p.broadcast, nil
			p.pcs[msg.PeerID] = pc
		}
		p.mu.Unlock()
		if pc == nil {
			return fmt.Errorf("answer for no offer")
		}
		var answer webrtc.SessionDescription
		if err := json.Unmarshal(msg.Signal, &answer); err != nil {
			return err
		}
		return p.setRemote(msg.PeerID, pc, answer)
	case "candidate":
		var c webrtc.ICECandidateInit
		if err := json.Unmarshal(msg.Signal, &c); err != nil {
			return err
		}
		p.mu.Lock()
		pc := p.pcs[msg.PeerID]
		if pc == nil || pc.RemoteDescription() == nil {
			p.pending[msg.PeerID] = append(p.pending[msg.PeerID], c)
			pc = nil
		}
		p.mu.Unlock()
		if pc != nil {
			return pc.AddICECandidate(c)
		}
	case "error":
		return fmt.Errorf("server error: %s", msg.Error)
	}
	return nil
}

// setRemote sets the remote description, then adds the candidates that came before it.
func (p *pionPeer) setRemote(peerID string, pc *webrtc.PeerConnection, d webrtc.SessionDescription) error {
	if err := pc.SetRemoteDescription(d); err != nil {
		return err
	}
	p.mu.Lock()
	queued := p.pending[peerID]
	delete(p.pending, peerID)
	p.mu.Unlock()
	for _, c := range queued {
		if err := pc.AddICECandidate(c); err != nil {
			return err
		}
	}
	return nil
}
