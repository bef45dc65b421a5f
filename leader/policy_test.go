package leader

import (
	"reflect"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/config"
)

// TestPolicyIsSettingsByName: every Policy field is the config.Settings key
// of the same name and type, and PolicyOf copies each one (a field added to
// Policy but not to PolicyOf, or copied from the wrong key, fails here).
func TestPolicyIsSettingsByName(t *testing.T) {
	pt, st := reflect.TypeFor[Policy](), reflect.TypeFor[config.Settings]()
	var s config.Settings
	sv := reflect.ValueOf(&s).Elem()
	for i := range pt.NumField() {
		f := pt.Field(i)
		sf, ok := st.FieldByName(f.Name)
		if !ok {
			t.Errorf("Policy.%s: config.Settings has no key of that name", f.Name)
			continue
		}
		if sf.Type != f.Type {
			t.Errorf("Policy.%s is %s, config.Settings.%s is %s", f.Name, f.Type, f.Name, sf.Type)
			continue
		}
		// A value distinct per field, so a copy from the wrong key shows.
		v := sv.FieldByName(f.Name)
		switch v.Kind() {
		case reflect.Bool:
			v.SetBool(true)
		case reflect.String:
			v.SetString("v-" + f.Name)
		case reflect.Int, reflect.Int64:
			if v.Type() == reflect.TypeFor[time.Duration]() {
				v.SetInt(int64(time.Duration(i+1) * time.Second))
			} else {
				v.SetInt(int64(i + 1))
			}
		case reflect.Slice:
			v.Set(reflect.ValueOf([]string{"v-" + f.Name}))
		case reflect.Struct:
			// config.Segments: one named segment.
			v.Set(reflect.ValueOf(config.Segments{Items: []config.Segment{{Name: "v-" + f.Name}}}))
		default:
			t.Fatalf("Policy.%s: kind %s not covered by this test", f.Name, v.Kind())
		}
	}
	p := PolicyOf(s)
	pv := reflect.ValueOf(p)
	for i := range pt.NumField() {
		name := pt.Field(i).Name
		if got, want := pv.Field(i).Interface(), sv.FieldByName(name).Interface(); !reflect.DeepEqual(got, want) {
			t.Errorf("PolicyOf: Policy.%s = %v, want config.Settings.%s = %v", name, got, name, want)
		}
	}
	t.Logf("the leader reads %d of config.Settings' %d keys", pt.NumField(), st.NumField())
}
