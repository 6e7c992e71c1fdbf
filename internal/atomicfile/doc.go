// Package atomicfile replaces small files so that a crash at any moment
// leaves the old content or the new, never a part of either, and the new
// content is on disk once the call returns.
package atomicfile
