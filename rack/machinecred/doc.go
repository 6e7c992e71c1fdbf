// Package machinecred makes and checks the per-deployment credentials a
// rack hands to the machines it deploys.
//
// A machine proves nothing by its MAC or IP: anyone on the boot network
// can use either. What the installer has that others do not is its kernel
// command line, which the rack wrote for this deployment. So the rack
// derives a credential from the machine and the deployment (named by the
// region's boot decision) with a secret only the rack holds, appends it
// to the preseed URL on the command line, and serves the preseed only to
// a request that carries it:
//
//	/preseed/<machine>/<credential>
//
// The credential is an HMAC-SHA256 over the machine id and deployment id
// under the rack's key (machine-credential.key in its data directory,
// made on first start). Nothing is stored per deployment: a new
// deployment of the same machine has another credential, and one of an
// earlier deployment opens nothing, because the rack and the region both
// serve only the deployment in progress. The region never sees the key;
// it trusts the rack, which NATS authenticates, to have checked.
//
// Replacing the key file invalidates the credentials of deployments under
// way: their installers cannot fetch their preseeds, and must be booted
// again.
//
// What it does not do: the boot config that carries the credential is
// served (over TFTP or HTTP) to whoever asks for the machine's MAC, as
// every PXE system's is, so an attacker on the boot network who knows the
// MAC and asks while the deployment is in progress can read it. The
// credential closes the rack's preseed to every other network the rack's
// HTTP port reaches, to guessed and enumerated machine ids, to other
// machines' installers and to every time outside the deployment.
package machinecred
