// Starts PeerJS server (npm package "peer") for the benchmark, on 127.0.0.1
// and a free port that it prints. The limit of concurrent clients is raised
// from its default of 5000 so that the idle scenarios can hold 10k peers.
const { PeerServer } = require("peer");
PeerServer({ host: "127.0.0.1", port: 0, path: "/", concurrent_limit: 1000000 }, (server) => {
  console.log("listening 127.0.0.1:" + server.address().port);
});
