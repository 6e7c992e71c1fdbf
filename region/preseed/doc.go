// Package preseed renders install configs ("preseeds": cloud-init,
// autoinstall, kickstart, Debian preseed) from Go text/template sources,
// checks a template at save time, and diffs versions.
//
// A template sees these variables (Vars); a reference to anything else is
// an error at save time:
//
//	{{.Machine.ID}} {{.Machine.Hostname}} {{.Machine.Arch}} {{.Machine.MACs}} {{.Machine.MAC}} (the first MAC)
//	{{.OS.Name}} {{.OS.Release}} {{.OS.Arch}} {{.OS.Subarch}} {{.OS.ImageVersion}}
//	{{.Rack.ID}} {{.Rack.Name}} {{.Rack.BootURL}}
//	{{.URLs.Preseed}} (this document) {{.URLs.Boot}} (the rack's HTTP server)
//	{{.URLs.Status}} (where the installer reports its outcome; see below)
//	{{.Preseed.Name}} {{.Preseed.Version}}
//	{{.LicenceKey}} (empty when the release takes none)
//
// and the functions join, upper, lower, quote.
//
// A deployment ends when the installer POSTs its outcome to {{.URLs.Status}}
// as a form or JSON: result=success (the machine is deployed and boots from
// its disk from now on) or result=failure, with an optional message, e.g.
// in a cloud-init runcmd or a Debian late_command:
//
//	curl -fsS --data 'result=success' {{.URLs.Status}}
//
// The URL carries a token good for this deployment only. A machine whose
// installer never reports is marked failed after regiond's -deploy-timeout.
package preseed
