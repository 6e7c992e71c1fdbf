package preseedcache

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/atomicfile"
	"github.com/rackplane/rackplane/internal/keyfile"
)

// Files under the rack's data directory.
const (
	// KeyFile holds the 32-byte AES-256 key the entries are sealed with.
	KeyFile = "preseed-cache.key"
	// Dir holds one sealed file per machine, <machine id>.sealed.
	Dir = "preseed-cache"
)

// Config configures a Store. Zero values take the defaults of
// DefaultConfig.
type Config struct {
	// DataDir is the rack's data directory. Required.
	DataDir string
	// MaxEntries bounds how many machines' preseeds are kept.
	MaxEntries int
	// MaxBytes bounds the size of all sealed entries together.
	MaxBytes int64
	Now      func() time.Time
}

// DefaultConfig returns the defaults: room for a large site deploying at
// once, far below what a rack's disk notices.
func DefaultConfig() Config {
	return Config{MaxEntries: 4096, MaxBytes: 256 << 20, Now: time.Now}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxEntries <= 0 {
		c.MaxEntries = d.MaxEntries
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Validate reports every bad setting at once.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("DataDir is required"))
	}
	if c.MaxEntries < 0 {
		errs = append(errs, fmt.Errorf("MaxEntries %d: want 0 (default) or more", c.MaxEntries))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxBytes %d: want 0 (default) or more", c.MaxBytes))
	}
	if len(errs) > 0 {
		return rackplane.WrapError(rackplane.EINVALID, errors.Join(errs...), "preseedcache: bad config")
	}
	return nil
}

// Preseed is one machine's rendered preseed as the region answered it.
type Preseed struct {
	MachineID string `json:"machine_id"`
	Name      string `json:"name"`
	Version   int64  `json:"version"`
	Content   string `json:"content"`
	// Decision identifies the install decision the preseed was fetched
	// under (DecisionKey): another one means another deployment.
	Decision string `json:"decision,omitempty"`
	// StatusTokenSHA256 is the region's hex SHA-256 of the install
	// status token in Content: see TokenMatches.
	StatusTokenSHA256 string    `json:"status_token_sha256,omitempty"`
	FetchedAt         time.Time `json:"fetched_at"`
}

// TokenMatches reports, in constant time, whether token is the install
// status token of p's deployment. An entry without the token's hash
// matches none.
func (p Preseed) TokenMatches(token string) bool {
	want, err := hex.DecodeString(p.StatusTokenSHA256)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

type entry struct {
	size      int64
	fetchedAt time.Time
}

// Store is the sealed, bounded store of preseeds by machine id.
type Store struct {
	cfg  Config
	dir  string
	aead cipher.AEAD
	log  *slog.Logger

	mu      sync.Mutex
	entries map[string]entry
	bytes   int64

	entriesGauge prometheus.GaugeFunc
	bytesGauge   prometheus.GaugeFunc
	refused      prometheus.Counter
	evicted      prometheus.Counter
}

// magic starts every sealed file; it is also part of the additional data,
// so a file of another format version is refused, not misread.
const magic = "RPS1"

// Open opens (creating them on first use) the key file and the cache
// directory under cfg.DataDir, and indexes the entries there without
// decrypting them.
func Open(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	key, err := keyfile.LoadOrCreate(filepath.Join(cfg.DataDir, KeyFile), 32)
	if err != nil {
		// A new key cannot open what the old one sealed.
		return nil, fmt.Errorf("preseedcache (with a new key, remove %s too): %w", Dir, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("preseedcache: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("preseedcache: %w", err)
	}
	s := &Store{cfg: cfg, dir: filepath.Join(cfg.DataDir, Dir), aead: aead, log: log, entries: map[string]entry{},
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_preseed_cache_refused_total",
			Help: "Cached preseeds refused because they did not decrypt with the rack's key (altered, truncated, swapped, or sealed under another key); each is deleted.",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_preseed_cache_evicted_total",
			Help: "Cached preseeds dropped, oldest first, to stay within the cache's entry and byte bounds.",
		}),
	}
	s.entriesGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_preseed_cache_entries", Help: "Machines whose preseed the rack holds for when the region is away.",
	}, func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.entries)) })
	s.bytesGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_preseed_cache_bytes", Help: "Size of the sealed preseeds the rack holds.",
	}, func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(s.bytes) })
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("preseedcache: %w", err)
	}
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("preseedcache: %w", err)
	}
	for _, de := range des {
		id, ok := strings.CutSuffix(de.Name(), ".sealed")
		if _, err := uuid.Parse(id); !ok || err != nil || !de.Type().IsRegular() {
			// Left-overs of an interrupted write, or not ours.
			if atomicfile.IsTemp(de.Name()) {
				_ = os.Remove(filepath.Join(s.dir, de.Name()))
			}
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		s.entries[id] = entry{size: fi.Size(), fetchedAt: fi.ModTime()}
		s.bytes += fi.Size()
	}
	s.mu.Lock()
	s.evictLocked("")
	s.mu.Unlock()
	// Registered last: a failed Open leaves the registry as it was, so
	// that it can be tried again with it.
	if err := registerAll(reg, s.entriesGauge, s.bytesGauge, s.refused, s.evicted); err != nil {
		return nil, fmt.Errorf("preseedcache: register metrics: %w", err)
	}
	return s, nil
}

// registerAll registers cs with reg (none when reg is nil), unregistering
// those it did when one fails.
func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

func (s *Store) path(machineID string) string { return filepath.Join(s.dir, machineID+".sealed") }

// Put seals p and stores it as its machine's entry, replacing the one
// there, then drops the oldest entries beyond the bounds.
func (s *Store) Put(p Preseed) error {
	if _, err := uuid.Parse(p.MachineID); err != nil {
		return rackplane.Errorf(rackplane.EINVALID, "preseedcache: %q is not a machine id", p.MachineID)
	}
	if p.FetchedAt.IsZero() {
		p.FetchedAt = s.cfg.Now().UTC()
	}
	plain, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("preseedcache: %w", err)
	}
	sealed := s.seal(p.MachineID, plain)
	if int64(len(sealed)) > s.cfg.MaxBytes {
		return rackplane.Errorf(rackplane.EINVALID, "preseedcache: preseed of machine %s is %d bytes sealed, more than the cache holds (%d)", p.MachineID, len(sealed), s.cfg.MaxBytes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := atomicfile.WriteFile(s.path(p.MachineID), sealed, 0o600); err != nil {
		return fmt.Errorf("preseedcache: %w", err)
	}
	old := s.entries[p.MachineID]
	s.bytes += int64(len(sealed)) - old.size
	s.entries[p.MachineID] = entry{size: int64(len(sealed)), fetchedAt: p.FetchedAt}
	s.evictLocked(p.MachineID)
	return nil
}

// Get returns machineID's preseed. An entry that does not decrypt, or
// decrypts to another machine's, is deleted and refused.
func (s *Store) Get(machineID string) (Preseed, error) {
	var p Preseed
	if _, err := uuid.Parse(machineID); err != nil {
		return p, rackplane.Errorf(rackplane.EINVALID, "preseedcache: %q is not a machine id", machineID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sealed, err := os.ReadFile(s.path(machineID))
	if errors.Is(err, os.ErrNotExist) {
		return p, rackplane.Errorf(rackplane.ENOTFOUND, "no cached preseed for machine %s", machineID)
	}
	if err != nil {
		return p, fmt.Errorf("preseedcache: %w", err)
	}
	plain, err := s.open(machineID, sealed)
	if err == nil {
		if err = json.Unmarshal(plain, &p); err == nil && p.MachineID != machineID {
			err = fmt.Errorf("it is machine %s's", p.MachineID)
		}
	}
	if err != nil {
		s.refused.Inc()
		s.dropLocked(machineID)
		s.log.Error("cached preseed refused and deleted", "machine_id", machineID, "err", err)
		return Preseed{}, rackplane.WrapError(rackplane.ENOTFOUND, err, "the cached preseed of machine %s was refused: it does not decrypt with this rack's key", machineID)
	}
	return p, nil
}

// Drop deletes machineID's entry, if any.
func (s *Store) Drop(machineID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(machineID)
}

func (s *Store) dropLocked(machineID string) {
	if err := os.Remove(s.path(machineID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("remove cached preseed", "machine_id", machineID, "err", err)
	}
	if e, ok := s.entries[machineID]; ok {
		s.bytes -= e.size
		delete(s.entries, machineID)
	}
}

// Len returns how many entries the store holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// evictLocked drops the oldest entries until the store is within its
// bounds; keep, just written, goes last.
func (s *Store) evictLocked(keep string) {
	if len(s.entries) <= s.cfg.MaxEntries && s.bytes <= s.cfg.MaxBytes {
		return
	}
	ids := make([]string, 0, len(s.entries))
	for id := range s.entries {
		if id != keep {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool {
		a, b := s.entries[ids[i]], s.entries[ids[j]]
		if !a.fetchedAt.Equal(b.fetchedAt) {
			return a.fetchedAt.Before(b.fetchedAt)
		}
		return ids[i] < ids[j]
	})
	for _, id := range ids {
		if len(s.entries) <= s.cfg.MaxEntries && s.bytes <= s.cfg.MaxBytes {
			return
		}
		s.log.Warn("preseed cache full: dropping the oldest entry", "machine_id", id)
		s.dropLocked(id)
		s.evicted.Inc()
	}
}

func (s *Store) additional(machineID string) []byte { return []byte(magic + "\x00" + machineID) }

// Seal seals plain with the store's key for what: other data of the rack
// that holds secrets (queued install reports with their status tokens)
// is sealed as the preseeds are. what (a machine id for a preseed) is
// authenticated with it: Unseal under another what refuses it. Callers
// choose whats that cannot be machine ids.
func (s *Store) Seal(what string, plain []byte) []byte { return s.seal(what, plain) }

// Unseal opens what Seal sealed for what.
func (s *Store) Unseal(what string, sealed []byte) ([]byte, error) { return s.open(what, sealed) }

func (s *Store) seal(machineID string, plain []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		panic(fmt.Sprintf("preseedcache: random nonce: %v", err)) // crypto/rand does not fail on Linux
	}
	out := append([]byte(magic), nonce...)
	return s.aead.Seal(out, nonce, plain, s.additional(machineID))
}

func (s *Store) open(machineID string, sealed []byte) ([]byte, error) {
	n := len(magic) + s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() || string(sealed[:len(magic)]) != magic {
		return nil, errors.New("not a sealed preseed")
	}
	plain, err := s.aead.Open(nil, sealed[len(magic):n], sealed[n:], s.additional(machineID))
	if err != nil {
		return nil, fmt.Errorf("authentication failed: %w", err)
	}
	return plain, nil
}
