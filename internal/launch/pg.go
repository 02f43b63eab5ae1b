package launch

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SystemDatabases reads the --database-url of `paygate bench`, `paygate chaos` and `paygate dev`,
// postgres://USER[:PASSWORD]@HOST[:PORT]/NAME, as the databases of a whole system: the gateway
// (every replica) uses NAME and each bank NAME_<bank> on the same server. Databases that do not
// exist yet are created (the role must be allowed to). It returns the gateway's URL and each
// bank's.
func SystemDatabases(ctx context.Context, raw string, banks []string) (string, map[string]string, error) {
	u, name, err := parseDatabaseURL(raw)
	if err != nil {
		return "", nil, err
	}
	names := []string{name}
	for _, b := range banks {
		names = append(names, name+"_"+b)
	}
	for _, n := range names {
		if !identifier.MatchString(n) {
			return "", nil, fmt.Errorf("--database-url: database name %q: want lower-case letters, digits and '_', at most 63, starting with a letter", n)
		}
	}
	if err := CreateDatabases(ctx, raw, names...); err != nil {
		return "", nil, err
	}
	bankURLs := make(map[string]string, len(banks))
	for i, b := range banks {
		bankURLs[b] = withDatabase(u, names[i+1])
	}
	return withDatabase(u, name), bankURLs, nil
}

// identifier is a database name that needs no quoting (and so cannot surprise anyone reading
// the URLs): lower case, at most 63 bytes, PostgreSQL's limit.
var identifier = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// parseDatabaseURL parses a postgres:// URL and returns it with the database it names.
func parseDatabaseURL(raw string) (*url.URL, string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return nil, "", errors.New("--database-url: want postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" || strings.Contains(name, "/") {
		return nil, "", errors.New("--database-url: the URL must name a database (postgres://HOST/NAME)")
	}
	return u, name, nil
}

func withDatabase(u *url.URL, name string) string {
	c := *u
	c.Path, c.RawPath = "/"+name, ""
	return c.String()
}

// Redact returns a database URL with its password replaced, for messages.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// CreateDatabases creates each database of names that does not exist yet on the server of the
// postgres:// URL server. It connects to the server's "postgres" database (or "template1", or the
// database server names) to do it.
func CreateDatabases(ctx context.Context, server string, names ...string) error {
	conn, err := adminConn(ctx, server)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, n := range names {
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, n).Scan(&exists); err != nil {
			return fmt.Errorf("database %s: %w", n, err)
		}
		if exists {
			continue
		}
		_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{n}.Sanitize())
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P04" { // duplicate_database: made meanwhile
			err = nil
		}
		if err != nil {
			return fmt.Errorf("create database %s: %w", n, err)
		}
	}
	return nil
}

// DropDatabases drops the databases of names on the server of server, closing what is still
// connected to them.
func DropDatabases(ctx context.Context, server string, names ...string) error {
	conn, err := adminConn(ctx, server)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var errs []error
	for _, n := range names {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// adminConn connects to a database of server that certainly exists, to create or drop others.
func adminConn(ctx context.Context, server string) (*pgx.Conn, error) {
	u, own, err := parseDatabaseURL(server)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, db := range []string{"postgres", "template1", own} {
		conn, err := pgx.Connect(ctx, withDatabase(u, db))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "3D000" { // not "database does not exist": no point trying another
			break
		}
	}
	return nil, fmt.Errorf("PostgreSQL at %s: %w", Redact(server), errors.Join(errs...))
}

// UsedDatabases returns those of the databases at urls that already hold tables (a store that
// was opened before), for runs that need databases of their own.
func UsedDatabases(ctx context.Context, urls ...string) ([]string, error) {
	var used []string
	for _, u := range urls {
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL at %s: %w", Redact(u), err)
		}
		var n int
		err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&n)
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL at %s: %w", Redact(u), err)
		}
		if n > 0 {
			_, name, _ := parseDatabaseURL(u)
			used = append(used, name)
		}
	}
	return used, nil
}
