// Copyright (c) 2016 Dmitri Popov and the contributors in CONTRIBUTORS.
// Use of this source code is governed by the MIT License in LICENSE.
// Forked from github.com/pin/tftp/v3 v3.2.0: see README.md for what changed.

// Package tftp is rackd's copy of github.com/pin/tftp/v3 at v3.2.0, the
// TFTP server and client library. README.md says what this copy changes
// and why; everything else is upstream's code, kept close to it so that
// the changes can go back upstream.
package tftp
