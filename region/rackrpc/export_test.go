package rackrpc

import "github.com/rackplane/rackplane/internal/rpc"

// SubnetsHandler is the subnets rpc's handler without the request
// schema in front of it, to test what it does on its own.
func (s *Server) SubnetsHandler() rpc.HandlerFunc { return s.subnets }
