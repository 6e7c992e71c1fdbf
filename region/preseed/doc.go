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
//
// # Formats
//
// Every version has a format, which decides the installer families of
// the images a deployment may use it with (an installer reads only its
// own kind of document; region/machine.PreseedFits):
//
//	cloud-config  cloud-init user-data                 agent
//	autoinstall   cloud-config with autoinstall:       ubuntu-autoinstall
//	d-i           debconf preseed lines                debian-installer
//	kickstart     anaconda kickstart                   anaconda
//	script        #! script (cloud-init user-data)     agent
//	other         none of the above
//
// and any format, or none, deploys a custom image; an agent image also
// deploys without a preseed. A deployment whose preseed does not fit is
// a conflict that names the formats that would.
//
// A create or edit may say the format ("format" in the request); one that
// does not gets the format detected from the content (its template
// source, before rendering), by events.DetectPreseedFormat:
//
//   - a UTF-8 byte order mark before the first line is ignored, and so
//     are carriage returns and blanks at the ends of lines;
//   - leading lines that are a template action alone ({{/* ... */ -}})
//     or cloud-init's "## template: jinja" are passed over, as they
//     render to nothing or are cloud-init's own;
//   - a first line starting with #cloud-config makes a cloud-config, and
//     an autoinstall if a later line starts with autoinstall: (a
//     top-level key, not indented);
//   - a first line starting with #! makes a script;
//   - otherwise the first line that is not blank, not a comment (#) and
//     not a template action alone ({{...}}) decides: a debconf selection
//     (owner, a question with a slash in its name, then a type: string,
//     boolean, select, multiselect, password, note, text, error, title or
//     seen) makes d-i; a kickstart command or section (text, lang, url,
//     rootpw, part, %packages, %pre, %post, ...) makes kickstart;
//     anything else, or no such line, makes other.
//
// An edit that gives no format and whose content is detected as other
// keeps a format its author gave the version edited (one its content was
// not detected as). A rollback keeps the format the version was saved with; a rack's
// shipped default is detected. Versions saved before formats are read as
// detected.
package preseed
