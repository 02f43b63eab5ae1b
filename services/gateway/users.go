package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Users: the seed file imported on first start.

// UserFixture is one user of the seed format of user_details.json.
type UserFixture struct {
	Password string   `json:"password"`
	Accounts []string `json:"accounts"`
	Role     string   `json:"role,omitempty"`
}

var (
	usernamePattern = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9._-]{0,63}$`)
	accountPattern  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.]*(-[a-zA-Z0-9_.]+)*-[0-9A-Za-z]+$`)
)

// ParseUsers reads user_details.json in the seed's format:
//
//	{"alice": {"password": "...", "accounts": ["bank1-1001", "bank2-2001"]}, ...}
//
// It refuses empty passwords, malformed usernames or account ids, and an account listed twice.
func ParseUsers(r io.Reader) (map[string]UserFixture, error) {
	dec := json.NewDecoder(r)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("gateway: users file: want a JSON object of users (%v)", err)
	}
	users := map[string]UserFixture{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("gateway: users file: %w", err)
		}
		name, _ := tok.(string)
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("gateway: users file: user %s is listed twice", name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("gateway: users file: user %s: %w", name, err)
		}
		ud := json.NewDecoder(bytes.NewReader(raw))
		ud.DisallowUnknownFields()
		var u UserFixture
		if err := ud.Decode(&u); err != nil {
			return nil, fmt.Errorf("gateway: users file: user %s: %w", name, err)
		}
		users[name] = u
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("gateway: users file: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("gateway: users file: trailing data after the users object")
	}
	seen := map[string]string{}
	for name, u := range users {
		if !usernamePattern.MatchString(name) {
			return nil, fmt.Errorf("gateway: users file: username %q: must start with a letter and use letters, digits, '.', '_' or '-'", name)
		}
		if u.Password == "" {
			return nil, fmt.Errorf("gateway: users file: user %s: empty password", name)
		}
		switch u.Role {
		case "", RoleCustomer, RoleAdmin:
		default:
			return nil, fmt.Errorf("gateway: users file: user %s: unknown role %q", name, u.Role)
		}
		for _, a := range u.Accounts {
			if !accountPattern.MatchString(a) || len(a) > 64 {
				return nil, fmt.Errorf("gateway: users file: user %s: account %q is not of the form <bank>-<number>", name, a)
			}
			if other, ok := seen[a]; ok {
				return nil, fmt.Errorf("gateway: users file: account %s is listed for both %s and %s", a, other, name)
			}
			seen[a] = name
		}
	}
	return users, nil
}

// importUsers loads the users file into an empty store, hashing every password. A store that
// already has users is left alone: after the first start the store is the truth.
func (g *Gateway) importUsers(ctx context.Context, path string) error {
	n, err := g.store.CountUsers(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		g.logger.Info("users already imported; not reading the users file again", "users", n, "file", path)
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	users, err := ParseUsers(bytes.NewReader(data))
	if err != nil {
		return err
	}
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	records := make([]userRecord, len(names))
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		u := users[name]
		role := u.Role
		if role == "" {
			role = RoleCustomer
		}
		records[i] = userRecord{Username: name, Role: role, Accounts: u.Accounts}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := bcrypt.GenerateFromPassword([]byte(u.Password), g.cfg.BcryptCost)
			records[i].PasswordHash, errs[i] = string(h), err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gateway: hash passwords: %w", err)
	}
	if err := g.store.CreateUsers(ctx, records, g.now()); err != nil {
		// Replicas starting together on one shared store race to import: the first wins, and
		// its users are the same file's.
		if errors.Is(err, ErrUserExists) || errors.Is(err, ErrAccountLinked) {
			if n, cerr := g.store.CountUsers(ctx); cerr == nil && n > 0 {
				g.logger.Info("users imported by another gateway replica meanwhile; not importing again", "users", n, "file", path)
				return nil
			}
		}
		return err
	}
	g.logger.Info("imported users", "users", len(records), "file", path)
	return nil
}
