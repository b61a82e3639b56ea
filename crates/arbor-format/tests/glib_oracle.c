/* Reads lines "TYPE HEX" and prints 1 if GLib considers the data normal form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef struct _GVariant GVariant; typedef struct _GVariantType GVariantType;
GVariantType* g_variant_type_new(const char*);
int g_variant_type_string_is_valid(const char*);
GVariant* g_variant_new_from_data(const GVariantType*, const void*, size_t, int, void (*)(void*), void*);
int g_variant_is_normal_form(GVariant*);
GVariant* g_variant_ref_sink(GVariant*);
void g_variant_unref(GVariant*);
void g_variant_type_free(GVariantType*);
static int hexv(int c){ return c<='9'?c-'0':(c|32)-'a'+10; }
int main(void){
  static char line[1<<22];
  while (fgets(line, sizeof line, stdin)) {
    char *sp = strchr(line, ' '); if (!sp) { puts("E"); continue; }
    *sp = 0; char *hex = sp+1; size_t hl = strcspn(hex, "\r\n");
    size_t n = hl/2; unsigned char *buf = aligned_alloc(16, n+16);
    for (size_t i=0;i<n;i++) buf[i] = hexv(hex[2*i])*16+hexv(hex[2*i+1]);
    if (!g_variant_type_string_is_valid(line)) { puts("T"); free(buf); fflush(stdout); continue; }
    GVariantType *t = g_variant_type_new(line);
    GVariant *v = g_variant_ref_sink(g_variant_new_from_data(t, buf, n, 0, NULL, NULL));
    printf("%d\n", g_variant_is_normal_form(v) ? 1 : 0); fflush(stdout);
    g_variant_unref(v); g_variant_type_free(t); free(buf);
  }
  return 0;
}
