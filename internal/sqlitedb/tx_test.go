package sqlitedb

import (
	"reflect"
	"slices"
	"testing"
)

// TestTxOffersOnlyStatements: an update's fn runs inside a transaction it may share with other
// updates, so Tx must not let it end that transaction (Commit, Rollback) or reach the *sql.Tx
// underneath: its methods are the statement runners and nothing else.
func TestTxOffersOnlyStatements(t *testing.T) {
	t.Parallel()
	typ := reflect.TypeFor[*Tx]()
	var methods []string
	for m := range typ.Methods() {
		methods = append(methods, m.Name)
	}
	want := []string{"ExecContext", "PrepareContext", "QueryContext", "QueryRowContext"}
	if !slices.Equal(methods, want) {
		t.Errorf("*sqlitedb.Tx has methods %v; want only %v", methods, want)
	}
	for i := range typ.Elem().NumField() {
		if f := typ.Elem().Field(i); f.IsExported() || f.Anonymous {
			t.Errorf("*sqlitedb.Tx has field %s (exported %v, embedded %v); want unexported named fields only", f.Name, f.IsExported(), f.Anonymous)
		}
	}
}
