/* order_xsd.h - the order schema the XSD tests check documents against:
 * an <order> of one positive <id> and any number of <item>s. One text for
 * the unit tests of bridge/xmlcheck.c and the integration suite's schema
 * route, so that both hold the bridge to the same document type. Each
 * writes it to a file of its own temporary directory. */
#ifndef ORDER_XSD_H
#define ORDER_XSD_H

static const char ORDER_XSD[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\">\n"
    "  <xs:element name=\"order\">\n"
    "    <xs:complexType>\n"
    "      <xs:sequence>\n"
    "        <xs:element name=\"id\" type=\"xs:positiveInteger\"/>\n"
    "        <xs:element name=\"item\" type=\"xs:string\" minOccurs=\"0\"\n"
    "                    maxOccurs=\"unbounded\"/>\n"
    "      </xs:sequence>\n"
    "    </xs:complexType>\n"
    "  </xs:element>\n"
    "</xs:schema>\n";

#endif
