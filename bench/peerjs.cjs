// Starts PeerJS server (npm package "peer") for the benchmark, on 127.0.0.1
// and a free port that it prints. The limit of concurrent clients is raised
// from its default of 5000 so that the idle scenarios can hold 10k peers.
// SIGUSR2 runs a full garbage collection (node --expose-gc), so that the
// benchmark can measure memory after one, as it does for Peero.
const { PeerServer } = require("peer");
process.on("SIGUSR2", () => global.gc());
PeerServer({ host: "127.0.0.1", port: 0, path: "/", concurrent_limit: 1000000 }, (server) => {
  console.log("listening 127.0.0.1:" + server.address().port);
});
